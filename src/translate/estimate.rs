//! Local token estimates for admission and rate limiting (no remote tokenizer).
//!
//! Roughly 4 characters per token over every text field of `messages`, `system`, `prompt`,
//! `input` and the serialized `tools`/`functions`. Binary media are not text: each image,
//! audio clip or document part counts a flat [`MEDIA_TOKENS`] instead of its base64 length.

use serde_json::Value;

/// Flat estimate for one image / audio / file / document part.
pub const MEDIA_TOKENS: u64 = 1000;

pub(super) const CHARS_PER_TOKEN: u64 = 4;

/// Keys whose string values are identifiers or enums, not prompt text.
pub(super) const SKIP_KEYS: &[&str] = &[
    "type",
    "role",
    "id",
    "tool_call_id",
    "tool_use_id",
    "media_type",
    "call_id",
    "status",
    "detail",
    "signature",
    "cache_control",
];

pub(super) const MEDIA_TYPES: &[&str] = &[
    "image",
    "image_url",
    "input_audio",
    "file",
    "document",
    "input_image",
    "input_file",
];

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
    pub(super) chars: u64,
    pub(super) media: u64,
}

impl Tally {
    pub(super) fn walk(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.chars += s.chars().count() as u64,
            Value::Array(items) => items.iter().for_each(|i| self.walk(i)),
            Value::Object(obj) => {
                if obj
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| MEDIA_TYPES.contains(&t))
                {
                    self.media += 1;
                    return;
                }
                for (k, v) in obj {
                    if !SKIP_KEYS.contains(&k.as_str()) {
                        self.walk(v);
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Estimated prompt tokens of a chat, messages or completions request body; at least 1.
/// The tree-based reference that [`super::scan_request`] is tested against.
#[cfg(test)]
pub fn estimate_prompt_tokens(body: &Value) -> u64 {
    let mut tally = Tally::default();
    for key in ["messages", "system", "prompt", "input", "instructions"] {
        if let Some(v) = body.get(key) {
            tally.walk(v);
        }
    }
    for key in ["tools", "functions"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            tally.chars += v.to_string().chars().count() as u64;
        }
    }
    let text = tally.chars.div_ceil(CHARS_PER_TOKEN);
    (text + tally.media * MEDIA_TOKENS).max(1)
}

/// The output limit a request asks for: `max_completion_tokens`, else `max_output_tokens`
/// (Responses), else `max_tokens`.
#[cfg(test)]
pub fn requested_max_tokens(body: &Value) -> Option<u64> {
    ["max_completion_tokens", "max_output_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}
