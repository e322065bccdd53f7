//! Translation errors, and upstream error bodies rewritten into each client's error shape.

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// Why a request or response could not be translated. Both variants are client errors
/// (HTTP 400); the message names the offending field, e.g. `messages[2].content[0].type`.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("field `{field}` cannot be expressed for the target api: {reason}")]
    Unsupported { field: String, reason: String },
    #[error("invalid field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

impl TranslateError {
    /// The JSON path of the offending field, e.g. `messages[2].content[0].type`.
    pub fn field(&self) -> &str {
        match self {
            TranslateError::Unsupported { field, .. } | TranslateError::Invalid { field, .. } => {
                field
            }
        }
    }

    /// A chat-request error met translating a Responses request, its field named as the client
    /// wrote it (`max_completion_tokens` is `max_output_tokens`, a message is an `input` item).
    pub fn as_responses(self) -> TranslateError {
        let rename = |f: String| -> String {
            for (chat, resp) in [
                ("max_completion_tokens", "max_output_tokens"),
                ("response_format", "text.format"),
                ("reasoning_effort", "reasoning.effort"),
                ("messages", "input"),
            ] {
                if let Some(rest) = f.strip_prefix(chat) {
                    return format!("{resp}{rest}");
                }
            }
            f
        };
        match self {
            TranslateError::Unsupported { field, reason } => TranslateError::Unsupported {
                field: rename(field),
                reason,
            },
            TranslateError::Invalid { field, reason } => TranslateError::Invalid {
                field: rename(field),
                reason,
            },
        }
    }

    /// This error as an OpenAI error body (`invalid_request_error`, `param` = the field).
    pub fn to_openai(&self) -> Value {
        json!({"error": {
            "message": self.to_string(),
            "type": "invalid_request_error",
            "param": self.field(),
            "code": null,
        }})
    }

    /// This error as an Anthropic error body (`invalid_request_error`).
    pub fn to_anthropic(&self) -> Value {
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": self.to_string()}})
    }
}

pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Longest upstream message (in chars) copied into a client error.
const MAX_MESSAGE_CHARS: usize = 2000;

/// What we could learn from an upstream error body of unknown shape.
#[derive(Debug, Default)]
struct Upstream {
    message: String,
    /// `error.type` of an OpenAI- or Anthropic-shaped body.
    kind: Option<String>,
    /// The body was Anthropic-shaped (`{"type":"error","error":{..}}`).
    anthropic: bool,
    /// `error.param` / `error.code` of an OpenAI-shaped body.
    param: Value,
    code: Value,
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

fn message_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(truncate(s)),
        Value::Null | Value::String(_) => None,
        other => Some(truncate(&other.to_string())),
    }
}

fn parse_upstream(status: u16, body: &[u8]) -> Upstream {
    let mut up = Upstream::default();
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => {
            if let Some(Value::Object(err)) = obj.get("error") {
                up.anthropic = obj.get("type").and_then(Value::as_str) == Some("error");
                up.kind = err.get("type").and_then(Value::as_str).map(str::to_string);
                up.message = err.get("message").and_then(message_of).unwrap_or_default();
                up.param = err.get("param").cloned().unwrap_or(Value::Null);
                up.code = err.get("code").cloned().unwrap_or(Value::Null);
            } else {
                up.message = ["error", "message", "detail", "msg"]
                    .iter()
                    .find_map(|k| obj.get(*k).and_then(message_of))
                    .unwrap_or_else(|| truncate(&Value::Object(obj.clone()).to_string()));
            }
        }
        Ok(other) => up.message = message_of(&other).unwrap_or_default(),
        Err(_) => up.message = truncate(&String::from_utf8_lossy(body)),
    }
    if up.message.is_empty() {
        up.message = format!("upstream returned HTTP {status}");
    }
    up
}

fn openai_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

fn openai_code_for_status(status: u16) -> Value {
    match status {
        401 => json!("invalid_api_key"),
        429 => json!("rate_limit_exceeded"),
        _ => Value::Null,
    }
}

/// Anthropic `error.type` → the closest OpenAI `error.type`.
pub(crate) fn anthropic_type_to_openai(kind: &str) -> &'static str {
    match kind {
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_error",
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        _ => "server_error",
    }
}

fn anthropic_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

const ANTHROPIC_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "timeout_error",
    "api_error",
    "overloaded_error",
];

/// Rewrite an upstream error (any protocol, maybe not JSON) as an OpenAI error body:
/// `{"error":{"message","type","param","code"}}`.
pub fn error_to_openai(status: u16, body: &[u8]) -> Value {
    let up = parse_upstream(status, body);
    let (kind, param, code) = if up.anthropic {
        let kind = up
            .kind
            .as_deref()
            .map(anthropic_type_to_openai)
            // A 4xx keeps its class even when the upstream's type has no OpenAI twin.
            .filter(|k| *k != "server_error" || !(400..500).contains(&status))
            .unwrap_or_else(|| openai_type_for_status(status));
        (
            kind.to_string(),
            Value::Null,
            openai_code_for_status(status),
        )
    } else {
        let kind = up
            .kind
            .unwrap_or_else(|| openai_type_for_status(status).to_string());
        let code = match up.code {
            Value::Null => openai_code_for_status(status),
            code => code,
        };
        (kind, up.param, code)
    };
    let mut err = Map::new();
    err.insert("message".into(), Value::String(up.message));
    err.insert("type".into(), Value::String(kind));
    err.insert("param".into(), param);
    err.insert("code".into(), code);
    json!({ "error": err })
}

/// Rewrite an upstream error (any protocol, maybe not JSON) as an Anthropic error body:
/// `{"type":"error","error":{"type","message"}}`.
pub fn error_to_anthropic(status: u16, body: &[u8]) -> Value {
    let up = parse_upstream(status, body);
    let kind = match &up.kind {
        // An Anthropic-shaped body keeps its (known) type; OpenAI types are too coarse,
        // so everything else is derived from the status code.
        Some(kind) if up.anthropic && ANTHROPIC_TYPES.contains(&kind.as_str()) => kind.clone(),
        _ => anthropic_type_for_status(status).to_string(),
    };
    json!({"type": "error", "error": {"type": kind, "message": up.message}})
}

/// The error event that ends a stream Sluice could not pass on whole, in the client's dialect (the
/// official SDKs raise on it); the body is then aborted, never ended cleanly.
pub fn stream_error_event(client: super::Wire, fault: super::StreamFault) -> Bytes {
    let (msg, code) = (fault.message(), fault.label());
    match client {
        // The Responses `error` event; its `error` object also makes older SDKs raise.
        super::Wire::Responses => {
            let v = serde_json::json!({"type": "error", "code": code, "message": msg, "param": null,
                "sequence_number": 0, "error": {"message": msg, "type": "server_error", "code": code}});
            super::encode_sse(Some("error"), &v.to_string())
        }
        super::Wire::Chat => {
            let v = serde_json::json!({"error": {"message": msg, "type": "server_error", "param": null, "code": code}});
            super::encode_sse(None, &v.to_string())
        }
        super::Wire::Messages => {
            let v = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": msg}});
            super::encode_sse(Some("error"), &v.to_string())
        }
    }
}
