//! OpenAI chat `messages` → Anthropic `system` text and alternating turns.
//!
//! Consecutive same-role messages merge (Anthropic requires alternation); `tool` messages
//! become `tool_result` blocks in a user turn, placed first as Anthropic requires.

use serde_json::{Map, Value, json};

use super::common::{as_obj, is_absent, join, parse_data_url, req_str};
use super::error::{TranslateError, invalid, unsupported};

/// Media types Anthropic accepts for base64 images.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

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
pub(crate) fn convert_messages(
    messages: &[Value],
) -> Result<(Vec<String>, Vec<Value>), TranslateError> {
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
            other => {
                return Err(invalid(
                    join(&path, "role"),
                    format!("unknown role `{other}`"),
                ));
            }
        }
    }
    if turns.is_empty() {
        return Err(invalid(
            "messages",
            "at least one user or assistant message is required",
        ));
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
        _ => {
            return Err(invalid(
                cpath,
                "expected a string or an array of content parts",
            ));
        }
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
                return Err(unsupported(
                    join(&ppath, "type"),
                    "Anthropic does not accept audio input",
                ));
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
        _ => {
            return Err(invalid(
                join(path, "image_url"),
                "expected an object with `url`",
            ));
        }
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
        Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        )
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
        return Err(unsupported(
            join(&fpath, "file_id"),
            "OpenAI file ids mean nothing to Anthropic",
        ));
    }
    let dpath = join(&fpath, "file_data");
    let url = req_str(file, "file_data", &fpath)?;
    match parse_data_url(url) {
        Some(("application/pdf", data)) => Ok(json!({
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        })),
        Some((other, _)) => Err(unsupported(
            dpath,
            format!("Anthropic documents must be PDF, not `{other}`"),
        )),
        None => Err(invalid(dpath, "expected a base64 data URL")),
    }
}

fn assistant_blocks(m: &Map<String, Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    for key in ["audio", "function_call"] {
        if !is_absent(m.get(key)) {
            return Err(unsupported(
                join(path, key),
                "not expressible in an Anthropic turn",
            ));
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
        return Err(unsupported(
            join(path, "type"),
            format!("`{kind}` tool calls have no Anthropic equivalent"),
        ));
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
        Some(_) => {
            return Err(invalid(
                cpath,
                "expected a string or an array of text parts",
            ));
        }
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}
