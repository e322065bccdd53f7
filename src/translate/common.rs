//! Shared helpers: JSON checks, finish-reason and id mapping, data URLs, timestamps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::error::{TranslateError, invalid};

/// Absent or JSON `null`.
pub(crate) fn is_absent(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// Absent, `null`, `false`, `0`, `""`, `[]` or `{}`: a field set to "off".
pub(crate) fn is_off(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Bool(true)) => false,
    }
}

/// A required string field.
pub(crate) fn req_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, TranslateError> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(join(path, key), "expected a string"))
}

/// A value that must be a JSON object.
pub(crate) fn as_obj<'a>(
    v: &'a Value,
    path: &str,
) -> Result<&'a Map<String, Value>, TranslateError> {
    v.as_object()
        .ok_or_else(|| invalid(path, "expected a JSON object"))
}

/// `path.key`, or just `key` at the top level.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// An optional number field (null = absent).
pub(crate) fn opt_f64(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(key, "expected a number")),
    }
}

/// An optional positive integer field (null = absent).
pub(crate) fn opt_positive(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<u64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid(key, "expected a positive integer")),
        },
    }
}

/// `data:<media type>[;params];base64,<data>` → (media type, base64 data).
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mut params = meta.split(';');
    let media_type = params.next()?.trim();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) || media_type.is_empty() {
        return None;
    }
    Some((media_type, data))
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub(crate) fn stop_reason_to_finish(reason: &str) -> &'static str {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub(crate) fn finish_to_stop_reason(reason: &str) -> &'static str {
    match reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        // "stop" cannot tell a natural end from a stop sequence; end_turn is the safe reading.
        _ => "end_turn",
    }
}

/// Seconds since the Unix epoch (the OpenAI `created` field).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A process-unique suffix for ids when the upstream gave none.
pub(crate) fn fresh_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("sluice{nanos:x}{n:x}")
}

/// An Anthropic message id (`msg_X`) as an OpenAI id (`<prefix>X`), e.g. `chatcmpl-X`.
pub(crate) fn openai_id(anthropic_id: Option<&str>, prefix: &str) -> String {
    match anthropic_id {
        Some(id) if !id.is_empty() => format!("{prefix}{}", id.strip_prefix("msg_").unwrap_or(id)),
        _ => format!("{prefix}{}", fresh_suffix()),
    }
}

/// An OpenAI completion id (`chatcmpl-X` / `cmpl-X`) as an Anthropic id (`msg_X`).
pub(crate) fn anthropic_id(openai_id: Option<&str>) -> String {
    match openai_id {
        Some(id) if !id.is_empty() => {
            let bare = id
                .strip_prefix("chatcmpl-")
                .or_else(|| id.strip_prefix("cmpl-"))
                .unwrap_or(id);
            format!("msg_{bare}")
        }
        _ => format!("msg_{}", fresh_suffix()),
    }
}
