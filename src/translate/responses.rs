//! OpenAI Responses ↔ Chat Completions: the stateless subset of a Responses request as a chat
//! request (an Anthropic backend then gets it through [`super::chat_request_to_messages`]), and a
//! chat completion back as a Responses `response` object.
//!
//! Translated: `input` (a string, or items: messages with text and image parts, `function_call`
//! and `function_call_output`), `instructions`, function `tools`, `tool_choice`,
//! `parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`, `text.format` (as
//! `response_format`), `reasoning.effort`, `user`, `safety_identifier`, `prompt_cache_key`,
//! `service_tier`, `stream`. `metadata` is not sent (chat keeps it only for stored completions) but
//! echoed back in the response, as are `instructions`, `tools` and the sampling settings.
//! Dropped on purpose, as hints: `store` (nothing is stored: the response says `store: false`),
//! `include`, `truncation`, `top_logprobs`, `reasoning.summary`, `stream_options`, `reasoning`
//! input items (a model's own reasoning, replayed) and unknown fields. Refused with 400 naming the
//! field: what needs a backend that keeps state or runs tools (`previous_response_id`,
//! `conversation`, `background`, `prompt`, `item_reference` items, built-in tools such as
//! `web_search`), and file inputs.

use serde_json::{Map, Value, json};

use super::common::{as_obj, fresh_suffix, is_off, now_unix};
use super::error::{TranslateError, invalid, unsupported};
use super::usage::UsageDetail;
use crate::protocol::responses::{self, ResponseHead};

/// Top-level fields that only a backend serving Responses itself can honour, and why.
const STATEFUL: [(&str, &str); 4] = [
    (
        "previous_response_id",
        "continuing a stored response needs a backend that serves the responses api",
    ),
    (
        "conversation",
        "conversations are stored by a backend that serves the responses api",
    ),
    (
        "background",
        "background responses need a backend that serves the responses api",
    ),
    (
        "prompt",
        "stored prompt templates need a backend that serves the responses api",
    ),
];

/// The first field of a Responses request that only a Responses-serving backend can express, or
/// `None` when the request is in the stateless subset Sluice translates.
pub fn responses_native_field(req: &Value) -> Option<String> {
    let obj = req.as_object()?;
    for (key, _) in STATEFUL {
        if !is_off(obj.get(key)) {
            return Some(key.to_string());
        }
    }
    let tools = obj.get("tools").and_then(Value::as_array)?;
    tools.iter().enumerate().find_map(|(i, t)| {
        (t.get("type").and_then(Value::as_str) != Some("function"))
            .then(|| format!("tools[{i}].type"))
    })
}

/// Translate a Responses request into a Chat Completions request for `model`.
pub fn responses_request_to_chat(req: &Value, model: &str) -> Result<Value, TranslateError> {
    let obj = as_obj(req, "body")?;
    for (key, reason) in STATEFUL {
        if !is_off(obj.get(key)) {
            return Err(unsupported(key, reason));
        }
    }
    let mut messages = Vec::new();
    match obj.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => return Err(invalid("instructions", "expected a string")),
    }
    match obj.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(invalid(
                "input",
                "expected a string or an array of input items",
            ));
        }
    }
    if messages.is_empty() {
        return Err(invalid("input", "a non-empty input is required"));
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    for (from, to) in [
        ("max_output_tokens", "max_completion_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
        ("safety_identifier", "safety_identifier"),
        ("prompt_cache_key", "prompt_cache_key"),
        ("service_tier", "service_tier"),
    ] {
        if let Some(v) = obj.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(effort) = obj
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|v| !v.is_null())
    {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(format) = obj.get("text").and_then(|t| t.get("format"))
        && let Some(rf) = response_format(format)?
    {
        out.insert("response_format".into(), rf);
    }
    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| invalid("tools", "expected an array"))?;
        if !tools.is_empty() {
            let chat: Vec<Value> = tools
                .iter()
                .enumerate()
                .map(|(i, t)| function_tool(t, i))
                .collect::<Result<_, _>>()?;
            out.insert("tools".into(), Value::Array(chat));
        }
    }
    if let Some(choice) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        out.insert("tool_choice".into(), tool_choice(choice)?);
    }
    match obj.get("stream") {
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), json!(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => return Err(invalid("stream", "expected a boolean")),
    }
    Ok(Value::Object(out))
}

fn response_format(format: &Value) -> Result<Option<Value>, TranslateError> {
    let kind = format.get("type").and_then(Value::as_str).unwrap_or("text");
    Ok(match kind {
        "text" => None,
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        other => {
            return Err(unsupported(
                "text.format.type",
                format!("`{other}` has no chat completions equivalent"),
            ));
        }
    })
}

fn function_tool(t: &Value, i: usize) -> Result<Value, TranslateError> {
    let path = format!("tools[{i}]");
    let o = as_obj(t, &path)?;
    match o.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(unsupported(
                format!("{path}.type"),
                format!(
                    "the built-in tool `{other}` needs a backend that serves the responses api"
                ),
            ));
        }
        None => return Err(invalid(format!("{path}.type"), "expected a string")),
    }
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{path}.name"), "expected a string"))?;
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = o.get(key).filter(|v| !v.is_null()) {
            f.insert(key.into(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": f}))
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.name", "expected a string"))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        Value::Object(o) => Err(unsupported(
            "tool_choice.type",
            format!(
                "`{}` needs a backend that serves the responses api",
                o.get("type").and_then(Value::as_str).unwrap_or("")
            ),
        )),
        _ => Err(invalid(
            "tool_choice",
            "expected auto, none, required or a function choice",
        )),
    }
}

/// One `input` item as chat messages (a `function_call` joins the assistant message before it).
fn input_item(item: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let path = format!("input[{i}]");
    let o = as_obj(item, &path)?;
    let kind = o.get("type").and_then(Value::as_str);
    match kind {
        None | Some("message") => {
            let role = o
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{path}.role"), "expected a string"))?;
            let role = match role {
                "user" | "assistant" | "system" => role,
                "developer" => "system",
                other => {
                    return Err(invalid(
                        format!("{path}.role"),
                        format!("unknown role `{other}`"),
                    ));
                }
            };
            let content = message_content(o.get("content"), &path)?;
            out.push(json!({"role": role, "content": content}));
        }
        Some("function_call") => {
            let call_id = o
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{path}.call_id"), "expected a string"))?;
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{path}.name"), "expected a string"))?;
            let arguments = o.get("arguments").and_then(Value::as_str).unwrap_or("{}");
            let call = json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}});
            let joins = out.last().is_some_and(|m| {
                m["role"] == "assistant" && (m["tool_calls"].is_array() || m["content"].is_null())
            });
            if joins && let Some(last) = out.last_mut() {
                match last["tool_calls"].as_array_mut() {
                    Some(calls) => calls.push(call),
                    None => last["tool_calls"] = json!([call]),
                }
            } else {
                out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
            }
        }
        Some("function_call_output") => {
            let call_id = o
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{path}.call_id"), "expected a string"))?;
            let output = match o.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => return Err(invalid(format!("{path}.output"), "expected a string")),
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // A model's own reasoning, replayed: a hint the chat api has no place for.
        Some("reasoning") => {}
        Some("item_reference") => {
            return Err(unsupported(
                format!("{path}.type"),
                "item references need a backend that serves the responses api",
            ));
        }
        Some(other) => {
            return Err(unsupported(
                format!("{path}.type"),
                format!("`{other}` items need a backend that serves the responses api"),
            ));
        }
    }
    Ok(())
}

/// A message's `content`: a string, or input/output parts as chat parts.
fn message_content(content: Option<&Value>, path: &str) -> Result<Value, TranslateError> {
    let parts = match content {
        Some(Value::String(s)) => return Ok(json!(s)),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(invalid(
                format!("{path}.content"),
                "expected a string or an array",
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = format!("{path}.content[{j}]");
        match p.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                let text = p
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("{at}.text"), "expected a string"))?;
                out.push(json!({"type": "text", "text": text}));
            }
            Some("refusal") => {
                let text = p.get("refusal").and_then(Value::as_str).unwrap_or("");
                out.push(json!({"type": "text", "text": text}));
            }
            Some("input_image") => {
                let url = p.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                    unsupported(
                        format!("{at}.image_url"),
                        "only images given by url or data url are translated",
                    )
                })?;
                let mut image = json!({"url": url});
                if let Some(d) = p.get("detail").filter(|v| !v.is_null()) {
                    image["detail"] = d.clone();
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            other => {
                return Err(unsupported(
                    format!("{at}.type"),
                    format!(
                        "`{}` parts are not translated to chat completions",
                        other.unwrap_or("")
                    ),
                ));
            }
        }
    }
    // Chat wants plain text parts as one string when that is all there is (assistant turns).
    if out.iter().all(|p| p["type"] == "text") {
        let text: Vec<&str> = out.iter().filter_map(|p| p["text"].as_str()).collect();
        return Ok(json!(text.join("")));
    }
    Ok(Value::Array(out))
}

/// What a finished chat answer holds, for the Responses object.
#[derive(Debug, Default, Clone)]
pub(crate) struct Answer {
    pub id: String,
    pub text: String,
    /// `(call_id, name, arguments)` of each tool call.
    pub calls: Vec<(String, String, String)>,
    /// The chat `finish_reason`.
    pub finish: Option<String>,
    pub usage: Option<UsageDetail>,
}

impl Answer {
    /// The Responses `output` items.
    pub fn output(&self) -> Vec<Value> {
        let mut out = Vec::new();
        if !self.text.is_empty() || self.calls.is_empty() {
            out.push(message_item(&self.id, &self.text, "completed"));
        }
        for (i, (call_id, name, args)) in self.calls.iter().enumerate() {
            out.push(function_call_item(
                &self.id,
                i,
                call_id,
                name,
                args,
                "completed",
            ));
        }
        out
    }

    /// The response `status` for the chat `finish_reason`.
    pub fn status(&self) -> &'static str {
        match self.finish.as_deref() {
            Some("length" | "content_filter") => "incomplete",
            _ => "completed",
        }
    }
}

/// A Responses `message` output item with one `output_text` part.
pub(crate) fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": format!("msg_{id}"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

/// A Responses `function_call` output item.
pub(crate) fn function_call_item(
    id: &str,
    i: usize,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({
        "type": "function_call",
        "id": format!("fc_{id}_{i}"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// A Responses `usage` object.
pub(crate) fn responses_usage(u: UsageDetail) -> Value {
    json!({
        "input_tokens": u.usage.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.usage.total(),
    })
}

/// A bare id for Responses ids: the chat id without its prefix (or a fresh one).
pub(crate) fn bare_id(chat_id: Option<&str>) -> String {
    match chat_id {
        Some(id) if !id.is_empty() => id
            .strip_prefix("chatcmpl-")
            .or_else(|| id.strip_prefix("msg_"))
            .unwrap_or(id)
            .to_string(),
        _ => fresh_suffix(),
    }
}

/// The Responses `response` object for `req` (the client's request, whose settings it echoes):
/// `in_progress` with no output yet, or finished with `a`'s output and usage.
pub(crate) fn response_object(
    req: &Value,
    client_model: &str,
    a: &Answer,
    created_at: u64,
    finished: bool,
) -> Value {
    let id = format!("resp_{}", a.id);
    let mut head = ResponseHead {
        id: &id,
        model: client_model,
        created_at,
        status: "in_progress",
        store: false,
        previous_response_id: None,
    };
    if !finished {
        return responses::response_object(req, &head, Vec::new(), Value::Null);
    }
    head.status = a.status();
    let usage = a.usage.map_or(Value::Null, responses_usage);
    let mut v = responses::response_object(req, &head, a.output(), usage);
    if a.finish.as_deref() == Some("content_filter") {
        v["incomplete_details"] = json!({"reason": "content_filter"});
    }
    v
}

/// Read a chat completion into an [`Answer`].
pub(crate) fn read_chat(resp: &Value) -> Result<Answer, TranslateError> {
    let obj = as_obj(resp, "body")?;
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| invalid("choices", "expected a non-empty array"))?;
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let text = msg
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let calls = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
                    let f = c.get("function");
                    (
                        s(c.get("id")),
                        s(f.and_then(|f| f.get("name"))),
                        s(f.and_then(|f| f.get("arguments"))),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Answer {
        id: bare_id(obj.get("id").and_then(Value::as_str)),
        text,
        calls,
        finish: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: obj.get("usage").and_then(UsageDetail::from_openai),
    })
}

/// Translate a chat completion into a Responses `response` object answering `req`.
pub fn chat_response_to_responses(
    resp: &Value,
    req: &Value,
    client_model: &str,
) -> Result<Value, TranslateError> {
    let a = read_chat(resp)?;
    let created = resp
        .get("created")
        .and_then(Value::as_u64)
        .unwrap_or_else(now_unix);
    Ok(response_object(req, client_model, &a, created, true))
}
