//! Anthropic Messages request → OpenAI Chat Completions request.
//!
//! Fields Anthropic accepts but OpenAI cannot honour fail with `Unsupported` naming the field.
//! Dropped on purpose: `cache_control` everywhere (a caching hint; OpenAI caches prompts
//! automatically), `thinking`/`redacted_thinking` blocks in past assistant turns (Anthropic
//! itself strips previous turns' thinking from the context), text-block `citations` (output
//! annotations), `service_tier`, `thinking: {"type":"disabled"}`, and unknown fields
//! (forward compatibility). `max_tokens` becomes `max_completion_tokens` (the current OpenAI
//! name; the deprecated `max_tokens` is rejected by reasoning models). A `tool_result` with
//! `is_error: true` has no OpenAI flag, so it is expressed in-band as an `Error: ` prefix.

use serde_json::{Map, Value, json};

use super::common::{as_obj, is_off, join, opt_f64, opt_positive, req_str};
use super::error::{TranslateError, invalid, unsupported};

/// OpenAI's limit on stop sequences.
const MAX_STOP: usize = 4;

/// Translate an Anthropic messages body into an OpenAI chat completions body for `model`.
/// A streaming request also gets `stream_options.include_usage = true`.
pub fn messages_request_to_chat(req: &Value, model: &str) -> Result<Value, TranslateError> {
    let obj = as_obj(req, "body")?;
    reject_anthropic_only_fields(obj)?;

    let mut messages = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(Value::Array(blocks)) => {
            let texts = blocks
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let path = format!("system[{i}]");
                    let b = as_obj(b, &path)?;
                    match req_str(b, "type", &path)? {
                        "text" => Ok(req_str(b, "text", &path)?),
                        other => Err(unsupported(
                            join(&path, "type"),
                            format!("`{other}` system blocks have no OpenAI equivalent"),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !texts.is_empty() {
                messages.push(json!({"role": "system", "content": texts.join("\n\n")}));
            }
        }
        Some(_) => {
            return Err(invalid(
                "system",
                "expected a string or an array of text blocks",
            ));
        }
    }

    let turns = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "expected an array"))?;
    for (i, m) in turns.iter().enumerate() {
        let path = format!("messages[{i}]");
        let m = as_obj(m, &path)?;
        let cpath = join(&path, "content");
        let content = m
            .get("content")
            .ok_or_else(|| invalid(&cpath, "expected a string or an array of blocks"))?;
        match req_str(m, "role", &path)? {
            "user" => user_messages(content, &cpath, &mut messages)?,
            "assistant" => messages.push(assistant_message(content, &cpath)?),
            other => {
                return Err(invalid(
                    join(&path, "role"),
                    format!("unknown role `{other}`"),
                ));
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(max) = opt_positive(obj, "max_tokens")? {
        out.insert("max_completion_tokens".into(), json!(max));
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = opt_f64(obj, key)? {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(key, "must be between 0 and 1"));
            }
            out.insert(key.into(), obj[key].clone());
        }
    }
    match obj.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(stops)) => {
            if stops.len() > MAX_STOP {
                return Err(unsupported(
                    "stop_sequences",
                    format!("OpenAI accepts at most {MAX_STOP} stop sequences"),
                ));
            }
            if let Some(i) = stops.iter().position(|s| !s.is_string()) {
                return Err(invalid(format!("stop_sequences[{i}]"), "expected a string"));
            }
            if !stops.is_empty() {
                out.insert("stop".into(), Value::Array(stops.clone()));
            }
        }
        Some(_) => return Err(invalid("stop_sequences", "expected an array of strings")),
    }
    if let Some(user) = req.pointer("/metadata/user_id").and_then(Value::as_str) {
        out.insert("user".into(), json!(user));
    }
    match obj.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(stream)) => {
            out.insert("stream".into(), json!(stream));
            if *stream {
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        Some(_) => return Err(invalid("stream", "expected a boolean")),
    }
    tools(obj, &mut out)?;
    Ok(Value::Object(out))
}

fn reject_anthropic_only_fields(obj: &Map<String, Value>) -> Result<(), TranslateError> {
    if !is_off(obj.get("top_k")) {
        return Err(unsupported("top_k", "OpenAI has no top-k sampling"));
    }
    if let Some(thinking) = obj.get("thinking").filter(|v| !v.is_null())
        && thinking.get("type").and_then(Value::as_str) != Some("disabled")
    {
        return Err(unsupported(
            "thinking",
            "OpenAI chat completions have no extended thinking",
        ));
    }
    for key in ["mcp_servers", "container", "context_management"] {
        if !is_off(obj.get(key)) {
            return Err(unsupported(key, "an Anthropic-only feature"));
        }
    }
    Ok(())
}

/// One Anthropic user turn → `tool` messages (for its tool results, first, as OpenAI wants
/// them right after the assistant's tool calls) and then a `user` message for the rest.
fn user_messages(content: &Value, path: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(path, "expected a string or an array of blocks")),
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bpath = format!("{path}[{j}]");
        let b = as_obj(b, &bpath)?;
        match req_str(b, "type", &bpath)? {
            "text" => parts.push(json!({"type": "text", "text": req_str(b, "text", &bpath)?})),
            "image" => parts.push(image_part(b, &bpath)?),
            "document" => parts.push(file_part(b, &bpath)?),
            "tool_result" => out.push(tool_message(b, &bpath)?),
            other => {
                return Err(unsupported(
                    join(&bpath, "type"),
                    format!("`{other}` blocks have no OpenAI equivalent"),
                ));
            }
        }
    }
    match parts.len() {
        0 => {}
        1 if parts[0]["type"] == "text" => {
            out.push(json!({"role": "user", "content": parts[0]["text"]}));
        }
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

fn source<'a>(
    b: &'a Map<String, Value>,
    path: &str,
) -> Result<(&'a Map<String, Value>, String, &'a str), TranslateError> {
    let spath = join(path, "source");
    let source = b
        .get("source")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(&spath, "expected an object"))?;
    let kind = req_str(source, "type", &spath)?;
    Ok((source, spath, kind))
}

fn image_part(b: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let (source, spath, kind) = source(b, path)?;
    let url = match kind {
        "base64" => format!(
            "data:{};base64,{}",
            req_str(source, "media_type", &spath)?,
            req_str(source, "data", &spath)?
        ),
        "url" => req_str(source, "url", &spath)?.to_string(),
        other => {
            return Err(unsupported(
                join(&spath, "type"),
                format!("`{other}` image sources have no OpenAI equivalent"),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A base64 PDF `document` block → an OpenAI `file` part.
fn file_part(b: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    if b.get("citations").and_then(|c| c.get("enabled")) == Some(&Value::Bool(true)) {
        return Err(unsupported(
            join(path, "citations"),
            "OpenAI has no document citations",
        ));
    }
    let (source, spath, kind) = source(b, path)?;
    let media_type = source.get("media_type").and_then(Value::as_str);
    if kind != "base64" || media_type != Some("application/pdf") {
        return Err(unsupported(
            join(&spath, "type"),
            "only base64 PDF documents can be sent to OpenAI",
        ));
    }
    let data = req_str(source, "data", &spath)?;
    let filename = b
        .get("title")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or("document.pdf");
    Ok(json!({"type": "file", "file": {
        "filename": filename,
        "file_data": format!("data:application/pdf;base64,{data}"),
    }}))
}

fn tool_message(b: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let id = req_str(b, "tool_use_id", path)?;
    let cpath = join(path, "content");
    let mut texts = Vec::new();
    match b.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(blocks)) => {
            for (k, inner) in blocks.iter().enumerate() {
                let ipath = format!("{cpath}[{k}]");
                let inner = as_obj(inner, &ipath)?;
                match req_str(inner, "type", &ipath)? {
                    "text" => texts.push(req_str(inner, "text", &ipath)?.to_string()),
                    other => {
                        return Err(unsupported(
                            join(&ipath, "type"),
                            format!("OpenAI tool messages carry text only, not `{other}`"),
                        ));
                    }
                }
            }
        }
        Some(_) => return Err(invalid(cpath, "expected a string or an array of blocks")),
    }
    let is_error = b.get("is_error") == Some(&Value::Bool(true));
    if is_error {
        match texts.first_mut() {
            Some(first) => first.insert_str(0, "Error: "),
            None => texts.push("Error".to_string()),
        }
    }
    let content = match texts.len() {
        0 => json!(""),
        1 => json!(texts[0]),
        _ => Value::Array(
            texts
                .iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        ),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn assistant_message(content: &Value, path: &str) -> Result<Value, TranslateError> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({"role": "assistant", "content": s})),
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(path, "expected a string or an array of blocks")),
    };
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bpath = format!("{path}[{j}]");
        let b = as_obj(b, &bpath)?;
        match req_str(b, "type", &bpath)? {
            "text" => texts.push(req_str(b, "text", &bpath)?),
            "tool_use" => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": req_str(b, "id", &bpath)?,
                    "type": "function",
                    "function": {"name": req_str(b, "name", &bpath)?, "arguments": input.to_string()},
                }));
            }
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(unsupported(
                    join(&bpath, "type"),
                    format!("`{other}` blocks have no OpenAI equivalent"),
                ));
            }
        }
    }
    let mut msg = json!({"role": "assistant"});
    msg["content"] = if texts.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(texts.join("\n"))
    };
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    Ok(msg)
}

/// `tools` and `tool_choice` (with `disable_parallel_tool_use` → `parallel_tool_calls`).
fn tools(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let list = match obj.get("tools") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(list)) if list.is_empty() => return Ok(()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("tools", "expected an array")),
    };
    let mut tools = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let path = format!("tools[{i}]");
        let t = as_obj(t, &path)?;
        if let Some(kind) = t.get("type").and_then(Value::as_str)
            && kind != "custom"
        {
            return Err(unsupported(
                join(&path, "type"),
                format!("the Anthropic `{kind}` tool has no OpenAI equivalent"),
            ));
        }
        let mut function = Map::new();
        function.insert("name".into(), json!(req_str(t, "name", &path)?));
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            function.insert("description".into(), json!(d));
        }
        let schema = t
            .get("input_schema")
            .filter(|s| s.is_object())
            .ok_or_else(|| invalid(join(&path, "input_schema"), "expected an object"))?;
        function.insert("parameters".into(), schema.clone());
        tools.push(json!({"type": "function", "function": function}));
    }
    out.insert("tools".into(), Value::Array(tools));

    let Some(choice) = obj.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let choice = as_obj(choice, "tool_choice")?;
    let mapped = match req_str(choice, "type", "tool_choice")? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            json!({"type": "function", "function": {"name": req_str(choice, "name", "tool_choice")?}})
        }
        other => {
            return Err(invalid(
                "tool_choice.type",
                format!("unknown tool_choice `{other}`"),
            ));
        }
    };
    out.insert("tool_choice".into(), mapped);
    if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}
