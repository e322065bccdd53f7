//! Non-streaming responses: Anthropic message ↔ OpenAI chat completion.
//!
//! Anthropic blocks with no chat equivalent (`thinking`, server-tool blocks) are skipped:
//! the request translators never ask for them, so they only appear if a backend adds them.

use serde_json::{Map, Value, json};

use super::common::{
    anthropic_id, as_obj, finish_to_stop_reason, now_unix, openai_id, stop_reason_to_finish,
};
use super::error::{TranslateError, invalid};
use super::usage::UsageDetail;

/// What an Anthropic message response holds, in OpenAI terms.
pub(crate) struct AnthropicMessage<'a> {
    pub id: Option<&'a str>,
    pub text: String,
    pub tool_calls: Vec<Value>,
    /// Already an OpenAI `finish_reason` (or null).
    pub finish_reason: Value,
    pub usage: UsageDetail,
}

pub(crate) fn read_anthropic_message(resp: &Value) -> Result<AnthropicMessage<'_>, TranslateError> {
    let obj = as_obj(resp, "body")?;
    if obj.get("type").and_then(Value::as_str) == Some("error") {
        return Err(invalid(
            "type",
            "the upstream body is an error, not a message",
        ));
    }
    let content = obj
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("content", "expected an array"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (i, block) in content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let path = format!("content[{i}]");
                let b = as_obj(block, &path)?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": b.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": input.to_string(),
                    },
                }));
            }
            other => {
                tracing::debug!(block_type = ?other, "skipping anthropic block with no chat equivalent")
            }
        }
    }
    let finish_reason = obj
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or(Value::Null, |r| json!(stop_reason_to_finish(r)));
    let usage = obj
        .get("usage")
        .and_then(UsageDetail::from_anthropic)
        .unwrap_or_default();
    Ok(AnthropicMessage {
        id: obj.get("id").and_then(Value::as_str),
        text,
        tool_calls,
        finish_reason,
        usage,
    })
}

/// Translate an Anthropic message response into an OpenAI `chat.completion`.
pub fn messages_response_to_chat(
    resp: &Value,
    client_model: &str,
) -> Result<Value, TranslateError> {
    let m = read_anthropic_message(resp)?;
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let content = if m.text.is_empty() && !m.tool_calls.is_empty() {
        Value::Null
    } else {
        json!(m.text)
    };
    message.insert("content".into(), content);
    message.insert("refusal".into(), Value::Null);
    if !m.tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(m.tool_calls));
    }
    Ok(json!({
        "id": openai_id(m.id, "chatcmpl-"),
        "object": "chat.completion",
        "created": now_unix(),
        "model": client_model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": m.finish_reason,
        }],
        "usage": m.usage.to_openai(),
    }))
}

/// Translate an OpenAI `chat.completion` into an Anthropic message response (first choice).
pub fn chat_response_to_messages(
    resp: &Value,
    client_model: &str,
) -> Result<Value, TranslateError> {
    let obj = as_obj(resp, "body")?;
    if obj.get("error").is_some_and(|e| !e.is_null()) {
        return Err(invalid(
            "error",
            "the upstream body is an error, not a completion",
        ));
    }
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| invalid("choices", "expected a non-empty array"))?;
    let message = choice
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("choices[0].message", "expected an object"))?;

    let mut content = Vec::new();
    let mut text = String::new();
    match message.get("content") {
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = p
                    .get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str)
                {
                    text.push_str(t);
                }
            }
        }
        _ => {}
    }
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    if let Some(r) = refusal {
        text.push_str(r);
    }
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (j, call) in calls.iter().enumerate() {
            let path = format!("choices[0].message.tool_calls[{j}]");
            let f = call
                .get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| invalid(format!("{path}.function"), "expected an object"))?;
            let input = match f.get("arguments") {
                Some(Value::String(s)) if !s.trim().is_empty() => serde_json::from_str::<Value>(s)
                    .map_err(|e| {
                        invalid(
                            format!("{path}.function.arguments"),
                            format!("not valid JSON: {e}"),
                        )
                    })?,
                Some(v @ Value::Object(_)) => v.clone(),
                _ => json!({}),
            };
            if !input.is_object() {
                return Err(invalid(
                    format!("{path}.function.arguments"),
                    "must encode a JSON object",
                ));
            }
            content.push(json!({
                "type": "tool_use",
                "id": call.get("id").and_then(Value::as_str).map_or_else(|| format!("toolu_{j}"), str::to_string),
                "name": f.get("name").cloned().unwrap_or(Value::Null),
                "input": input,
            }));
        }
    }

    let stop_reason = match (refusal, choice.get("finish_reason").and_then(Value::as_str)) {
        (Some(_), _) => json!("refusal"),
        (None, Some(r)) => json!(finish_to_stop_reason(r)),
        (None, None) => Value::Null,
    };
    let usage = obj
        .get("usage")
        .and_then(UsageDetail::from_openai)
        .unwrap_or_default();
    Ok(json!({
        "id": anthropic_id(obj.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    }))
}
