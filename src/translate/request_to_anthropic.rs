//! OpenAI Chat Completions request → Anthropic Messages request.
//!
//! Fields OpenAI accepts but Anthropic cannot honour fail with `Unsupported` naming the field.
//! Fields dropped on purpose, because they are hints or consumed by the gateway:
//! `stream_options` (Anthropic always streams usage; the gateway handles `include_usage`),
//! `store`/`metadata` (OpenAI-side storage), `service_tier`, `prompt_cache_key`, `verbosity`,
//! message `name`, `image_url.detail`, tool `function.strict` (Anthropic already follows the
//! schema; failing on it would break SDKs that set it by default), `parallel_tool_calls: true`
//! (the default) and unknown fields (forward compatibility).

use serde_json::{Map, Value, json};

use super::common::{as_obj, is_absent, is_off, join, opt_f64, opt_positive, parse_data_url, req_str};
use super::error::{TranslateError, invalid, unsupported};

/// Media types Anthropic accepts for base64 images.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Translate an OpenAI chat completions body into an Anthropic messages body for `model`.
pub fn chat_request_to_messages(
    req: &Value,
    model: &str,
    default_max_tokens: u32,
) -> Result<Value, TranslateError> {
    let obj = as_obj(req, "body")?;
    reject_chat_only_fields(obj)?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "expected an array"))?;
    let (system, turns) = convert_messages(messages)?;

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(turns));
    common_params(obj, &mut out, default_max_tokens)?;
    tools(obj, &mut out)?;
    Ok(Value::Object(out))
}

/// Fields shared by chat and legacy completions: limits, sampling, stop, user, stream, and the
/// OpenAI-only knobs Anthropic has no equivalent for.
pub(crate) fn common_params(
    obj: &Map<String, Value>,
    out: &mut Map<String, Value>,
    default_max_tokens: u32,
) -> Result<(), TranslateError> {
    if let Some(n) = obj.get("n").filter(|v| !v.is_null())
        && n.as_u64() != Some(1)
    {
        return Err(unsupported("n", "Anthropic returns exactly one choice"));
    }
    for (key, reason) in [
        ("logprobs", "Anthropic does not return log probabilities"),
        ("top_logprobs", "Anthropic does not return log probabilities"),
        ("presence_penalty", "Anthropic has no presence penalty"),
        ("frequency_penalty", "Anthropic has no frequency penalty"),
        ("logit_bias", "Anthropic has no logit bias"),
    ] {
        if !is_off(obj.get(key)) {
            return Err(unsupported(key, reason));
        }
    }
    if !is_absent(obj.get("seed")) {
        return Err(unsupported("seed", "Anthropic has no deterministic sampling seed"));
    }

    let max = match opt_positive(obj, "max_completion_tokens")? {
        Some(n) => n,
        None => opt_positive(obj, "max_tokens")?.unwrap_or(u64::from(default_max_tokens)),
    };
    out.insert("max_tokens".into(), json!(max));

    if let Some(t) = opt_f64(obj, "temperature")? {
        if t < 0.0 {
            return Err(invalid("temperature", "must be at least 0"));
        }
        if t > 1.0 {
            return Err(unsupported(
                "temperature",
                "Anthropic accepts temperatures from 0 to 1",
            ));
        }
        out.insert("temperature".into(), obj["temperature"].clone());
    }
    if let Some(p) = opt_f64(obj, "top_p")? {
        if !(0.0..=1.0).contains(&p) {
            return Err(invalid("top_p", "must be between 0 and 1"));
        }
        out.insert("top_p".into(), obj["top_p"].clone());
    }

    let stops = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(_) => Ok(s.clone()),
                _ => Err(invalid(format!("stop[{i}]"), "expected a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("stop", "expected a string or an array of strings")),
    };
    if !stops.is_empty() {
        out.insert("stop_sequences".into(), Value::Array(stops));
    }

    let user = ["user", "safety_identifier"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()));
    if let Some(user) = user {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    match obj.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("stream".into(), json!(b));
        }
        Some(_) => return Err(invalid("stream", "expected a boolean")),
    }
    Ok(())
}

fn reject_chat_only_fields(obj: &Map<String, Value>) -> Result<(), TranslateError> {
    for (key, reason) in [
        ("audio", "Anthropic cannot produce audio"),
        ("prediction", "Anthropic has no predicted outputs"),
        ("reasoning_effort", "Anthropic has no reasoning effort setting"),
        ("web_search_options", "Anthropic web search is a server tool, not a request option"),
        ("functions", "legacy functions are not translated; use `tools`"),
        ("function_call", "legacy function_call is not translated; use `tool_choice`"),
    ] {
        if !is_off(obj.get(key)) {
            return Err(unsupported(key, reason));
        }
    }
    if let Some(modalities) = obj.get("modalities").and_then(Value::as_array)
        && modalities.iter().any(|m| m.as_str() != Some("text"))
    {
        return Err(unsupported("modalities", "Anthropic produces text only"));
    }
    if let Some(format) = obj.get("response_format").filter(|v| !v.is_null()) {
        let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "text" {
            return Err(unsupported(
                "response_format.type",
                format!("Anthropic cannot enforce a `{kind}` response format"),
            ));
        }
    }
    Ok(())
}

/// One Anthropic turn being built; consecutive same-role messages merge into it.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

/// Split OpenAI messages into system text and alternating Anthropic turns.
fn convert_messages(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let m = as_obj(m, &path)?;
        match req_str(m, "role", &path)? {
            "system" | "developer" => {
                if !turns.is_empty() {
                    return Err(unsupported(
                        join(&path, "role"),
                        "Anthropic accepts system instructions only before the conversation",
                    ));
                }
                system.extend(text_only(m.get("content"), &join(&path, "content"))?);
            }
            "user" => push_turn(&mut turns, "user", user_blocks(m, &path)?),
            "assistant" => push_turn(&mut turns, "assistant", assistant_blocks(m, &path)?),
            "tool" => push_turn(&mut turns, "user", vec![tool_result(m, &path)?]),
            "function" => {
                return Err(unsupported(
                    join(&path, "role"),
                    "legacy function messages are not translated; use tool messages",
                ));
            }
            other => return Err(invalid(join(&path, "role"), format!("unknown role `{other}`"))),
        }
    }
    if turns.is_empty() {
        return Err(invalid("messages", "at least one user or assistant message is required"));
    }
    let turns = turns
        .into_iter()
        .map(|mut t| {
            // Anthropic wants tool_result blocks first in a user turn.
            if t.role == "user" {
                let (mut results, rest): (Vec<_>, Vec<_>) = t
                    .blocks
                    .into_iter()
                    .partition(|b| b["type"] == "tool_result");
                results.extend(rest);
                t.blocks = results;
            }
            json!({"role": t.role, "content": t.blocks})
        })
        .collect();
    Ok((system, turns))
}

/// Text of a content that may only hold text: a string or an array of text parts.
fn text_only(content: Option<&Value>, path: &str) -> Result<Vec<String>, TranslateError> {
    match content {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let ppath = format!("{path}[{j}]");
                let p = as_obj(p, &ppath)?;
                match req_str(p, "type", &ppath)? {
                    "text" => Ok(req_str(p, "text", &ppath)?.to_string()),
                    other => Err(unsupported(
                        join(&ppath, "type"),
                        format!("`{other}` parts are not allowed here"),
                    )),
                }
            })
            .collect(),
        _ => Err(invalid(path, "expected a string or an array of text parts")),
    }
}

fn text_block(text: &str) -> Option<Value> {
    // Anthropic rejects empty text blocks; an empty string carries nothing.
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn user_blocks(m: &Map<String, Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    let cpath = join(path, "content");
    let parts = match m.get("content") {
        Some(Value::String(s)) => return Ok(text_block(s).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        _ => return Err(invalid(cpath, "expected a string or an array of content parts")),
    };
    let mut blocks = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let ppath = format!("{cpath}[{j}]");
        let p = as_obj(p, &ppath)?;
        match req_str(p, "type", &ppath)? {
            "text" => blocks.extend(text_block(req_str(p, "text", &ppath)?)),
            "image_url" => blocks.push(image_block(p, &ppath)?),
            "file" => blocks.push(document_block(p, &ppath)?),
            "input_audio" => {
                return Err(unsupported(join(&ppath, "type"), "Anthropic does not accept audio input"));
            }
            other => {
                return Err(unsupported(
                    join(&ppath, "type"),
                    format!("unknown content part type `{other}`"),
                ));
            }
        }
    }
    Ok(blocks)
}

fn image_block(p: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let url = match p.get("image_url") {
        Some(Value::String(url)) => url.as_str(),
        Some(Value::Object(o)) => req_str(o, "url", &join(path, "image_url"))?,
        _ => return Err(invalid(join(path, "image_url"), "expected an object with `url`")),
    };
    let upath = join(path, "image_url.url");
    if url.starts_with("data:") {
        let (media_type, data) =
            parse_data_url(url).ok_or_else(|| invalid(&upath, "expected a base64 data URL"))?;
        if !IMAGE_TYPES.contains(&media_type) {
            return Err(unsupported(
                upath,
                format!("Anthropic accepts jpeg, png, gif and webp images, not `{media_type}`"),
            ));
        }
        Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}))
    } else if url.starts_with("http://") || url.starts_with("https://") {
        Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
    } else {
        Err(invalid(upath, "expected a data: or http(s) URL"))
    }
}

/// An OpenAI `file` part carrying a base64 PDF → an Anthropic `document` block.
fn document_block(p: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let fpath = join(path, "file");
    let file = p
        .get("file")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(&fpath, "expected an object"))?;
    if !is_absent(file.get("file_id")) {
        return Err(unsupported(join(&fpath, "file_id"), "OpenAI file ids mean nothing to Anthropic"));
    }
    let dpath = join(&fpath, "file_data");
    let url = req_str(file, "file_data", &fpath)?;
    match parse_data_url(url) {
        Some(("application/pdf", data)) => Ok(json!({
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        })),
        Some((other, _)) => Err(unsupported(dpath, format!("Anthropic documents must be PDF, not `{other}`"))),
        None => Err(invalid(dpath, "expected a base64 data URL")),
    }
}

fn assistant_blocks(m: &Map<String, Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    for key in ["audio", "function_call"] {
        if !is_absent(m.get(key)) {
            return Err(unsupported(join(path, key), "not expressible in an Anthropic turn"));
        }
    }
    let cpath = join(path, "content");
    let mut blocks = Vec::new();
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => blocks.extend(text_block(s)),
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let ppath = format!("{cpath}[{j}]");
                let p = as_obj(p, &ppath)?;
                let key = match req_str(p, "type", &ppath)? {
                    "text" => "text",
                    "refusal" => "refusal",
                    other => {
                        return Err(unsupported(
                            join(&ppath, "type"),
                            format!("`{other}` parts are not allowed in assistant messages"),
                        ));
                    }
                };
                blocks.extend(text_block(req_str(p, key, &ppath)?));
            }
        }
        Some(_) => return Err(invalid(cpath, "expected a string, an array or null")),
    }
    // A refusal given as a field rather than a part.
    if let Some(refusal) = m.get("refusal").and_then(Value::as_str) {
        blocks.extend(text_block(refusal));
    }
    match m.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                blocks.push(tool_use(call, &format!("{path}.tool_calls[{j}]"))?);
            }
        }
        Some(_) => return Err(invalid(join(path, "tool_calls"), "expected an array")),
    }
    Ok(blocks)
}

fn tool_use(call: &Value, path: &str) -> Result<Value, TranslateError> {
    let call = as_obj(call, path)?;
    if let Some(kind) = call.get("type").and_then(Value::as_str)
        && kind != "function"
    {
        return Err(unsupported(join(path, "type"), format!("`{kind}` tool calls have no Anthropic equivalent")));
    }
    let id = req_str(call, "id", path)?;
    let fpath = join(path, "function");
    let function = call
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(&fpath, "expected an object"))?;
    let name = req_str(function, "name", &fpath)?;
    let apath = join(&fpath, "arguments");
    let input = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| invalid(&apath, format!("not valid JSON: {e}")))?,
        Some(other) => other.clone(),
    };
    if !input.is_object() {
        return Err(invalid(apath, "must encode a JSON object"));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

fn tool_result(m: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let id = req_str(m, "tool_call_id", path)?;
    let cpath = join(path, "content");
    let content = match m.get("content") {
        None | Some(Value::Null) => json!(""),
        Some(Value::String(s)) => json!(s),
        Some(v @ Value::Array(_)) => {
            let texts = text_only(Some(v), &cpath)?;
            Value::Array(texts.iter().filter_map(|t| text_block(t)).collect())
        }
        Some(_) => return Err(invalid(cpath, "expected a string or an array of text parts")),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

/// `tools`, `tool_choice` and `parallel_tool_calls`.
fn tools(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let mut tools = Vec::new();
    match obj.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, t) in list.iter().enumerate() {
                let path = format!("tools[{i}]");
                let t = as_obj(t, &path)?;
                let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
                if kind != "function" {
                    return Err(unsupported(
                        join(&path, "type"),
                        format!("`{kind}` tools have no Anthropic equivalent"),
                    ));
                }
                let fpath = join(&path, "function");
                let f = t
                    .get("function")
                    .and_then(Value::as_object)
                    .ok_or_else(|| invalid(&fpath, "expected an object"))?;
                let mut tool = Map::new();
                tool.insert("name".into(), json!(req_str(f, "name", &fpath)?));
                if let Some(d) = f.get("description").and_then(Value::as_str) {
                    tool.insert("description".into(), json!(d));
                }
                let schema = match f.get("parameters") {
                    None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                    Some(p) => p.clone(),
                };
                tool.insert("input_schema".into(), schema);
                tools.push(Value::Object(tool));
            }
        }
        Some(_) => return Err(invalid("tools", "expected an array")),
    }

    let choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => return Err(invalid("tool_choice", format!("unknown tool_choice `{other}`"))),
        }),
        Some(Value::Object(c)) => match c.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = c
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool_choice.function.name", "expected a string"))?;
                Some(json!({"type": "tool", "name": name}))
            }
            Some(other) => {
                return Err(unsupported(
                    "tool_choice.type",
                    format!("`{other}` tool choice has no Anthropic equivalent"),
                ));
            }
            None => return Err(invalid("tool_choice.type", "expected a string")),
        },
        Some(_) => return Err(invalid("tool_choice", "expected a string or an object")),
    };

    if tools.is_empty() {
        if let Some(c) = &choice
            && matches!(c["type"].as_str(), Some("any" | "tool"))
        {
            return Err(invalid("tool_choice", "requires `tools`"));
        }
        return Ok(());
    }
    let serial = obj.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = match choice {
        Some(c) => Some(c),
        None if serial => Some(json!({"type": "auto"})),
        None => None,
    };
    out.insert("tools".into(), Value::Array(tools));
    if let Some(mut choice) = choice {
        if serial && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}
