//! Token usage: extraction from bodies and stream events of either protocol, and its JSON forms.
//!
//! `Usage::input_tokens` is always the *whole* prompt: for Anthropic that is
//! `input_tokens + cache_creation_input_tokens + cache_read_input_tokens` (Anthropic's
//! `input_tokens` alone excludes cached tokens), matching OpenAI's `prompt_tokens`.

use serde_json::{Value, json};

use super::sse::SseEvent;

/// Tokens consumed by one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// Input plus output: what a token bucket is charged.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// Usage plus the cache split, kept while translating so it can be re-expressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UsageDetail {
    pub usage: Usage,
    /// Prompt tokens read from cache (OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`).
    pub cache_read: u64,
    /// Prompt tokens written to cache (Anthropic only).
    pub cache_creation: u64,
}

fn num(u: &Value, key: &str) -> u64 {
    u.get(key).and_then(Value::as_u64).unwrap_or(0)
}

impl UsageDetail {
    /// From an Anthropic `usage` object; `None` unless it has `input_tokens` or `output_tokens`.
    pub fn from_anthropic(u: &Value) -> Option<Self> {
        if u.get("input_tokens").is_none() && u.get("output_tokens").is_none() {
            return None;
        }
        let cache_read = num(u, "cache_read_input_tokens");
        let cache_creation = num(u, "cache_creation_input_tokens");
        Some(UsageDetail {
            usage: Usage {
                input_tokens: num(u, "input_tokens") + cache_read + cache_creation,
                output_tokens: num(u, "output_tokens"),
            },
            cache_read,
            cache_creation,
        })
    }

    /// From an OpenAI `usage` object; `None` unless it has `prompt_tokens` or `completion_tokens`.
    pub fn from_openai(u: &Value) -> Option<Self> {
        if u.get("prompt_tokens").is_none() && u.get("completion_tokens").is_none() {
            return None;
        }
        let cache_read = u
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Some(UsageDetail {
            usage: Usage {
                input_tokens: num(u, "prompt_tokens"),
                output_tokens: num(u, "completion_tokens"),
            },
            cache_read,
            cache_creation: 0,
        })
    }

    /// From either protocol's `usage` object.
    pub fn from_any(u: &Value) -> Option<Self> {
        Self::from_openai(u).or_else(|| Self::from_anthropic(u))
    }

    /// As an OpenAI `usage` object.
    pub fn to_openai(self) -> Value {
        let Usage {
            input_tokens,
            output_tokens,
        } = self.usage;
        json!({
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }

    /// As an Anthropic `usage` object (uncached input in `input_tokens`).
    pub fn to_anthropic(self) -> Value {
        let uncached = self
            .usage
            .input_tokens
            .saturating_sub(self.cache_read + self.cache_creation);
        json!({
            "input_tokens": uncached,
            "output_tokens": self.usage.output_tokens,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
        })
    }
}

/// Usage from one `usage` object of either protocol.
pub fn usage_from_object(u: &Value) -> Option<Usage> {
    UsageDetail::from_any(u).map(|d| d.usage)
}

/// Usage of an untranslated body or stream-event payload of either protocol: a top-level
/// `usage` (OpenAI `prompt_tokens`/`completion_tokens`, Anthropic `input_tokens`/`output_tokens`)
/// or an Anthropic `message_start`'s `message.usage`. `None` when absent or `null`.
pub fn usage_from_body(body: &Value) -> Option<Usage> {
    body.get("usage")
        .filter(|u| u.is_object())
        .or_else(|| body.get("message").and_then(|m| m.get("usage")))
        .and_then(UsageDetail::from_any)
        .map(|d| d.usage)
}

/// Accumulates usage from an untranslated stream of either protocol: the OpenAI final usage
/// chunk, or Anthropic `message_start` (input) + `message_delta` (cumulative output). Asked to,
/// it keeps the response's model too, from the same parsed events.
#[derive(Debug, Default)]
pub struct StreamUsage {
    usage: Option<Usage>,
    keep_model: bool,
    model: Option<String>,
}

impl StreamUsage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep the first model an observed event names (`model`, `message.model`, `response.model`).
    pub fn keep_model(&mut self) {
        self.keep_model = true;
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    pub fn observe(&mut self, ev: &SseEvent) {
        let data = ev.data.trim();
        if !data.starts_with('{') {
            return; // [DONE], keep-alives
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if self.keep_model && self.model.is_none() {
            self.model = model_of(&v);
        }
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(d) = v
                    .get("message")
                    .and_then(|m| m.get("usage"))
                    .and_then(UsageDetail::from_anthropic)
                {
                    self.usage = Some(d.usage);
                }
            }
            Some("message_delta") => {
                let Some(u) = v.get("usage") else { return };
                let cur = self.usage.get_or_insert_with(Usage::default);
                if let Some(out) = u.get("output_tokens").and_then(Value::as_u64) {
                    cur.output_tokens = out;
                }
                // Newer API versions repeat the (cumulative) input counts here.
                if u.get("input_tokens").is_some()
                    && let Some(d) = UsageDetail::from_anthropic(u)
                {
                    cur.input_tokens = d.usage.input_tokens;
                }
            }
            // A Responses stream's last event carries the whole response and its usage.
            Some(t) if t.starts_with("response.") => {
                if let Some(d) = v
                    .get("response")
                    .and_then(|r| r.get("usage"))
                    .and_then(UsageDetail::from_any)
                {
                    self.usage = Some(d.usage);
                }
            }
            _ => {
                if let Some(d) = v
                    .get("usage")
                    .filter(|u| u.is_object())
                    .and_then(UsageDetail::from_openai)
                {
                    self.usage = Some(d.usage);
                }
            }
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The model an event names: Anthropic's `message_start` in `message`, a Responses event in
/// `response`, an OpenAI chunk at the top.
fn model_of(v: &Value) -> Option<String> {
    [v.get("message"), v.get("response"), Some(v)]
        .into_iter()
        .flatten()
        .find_map(|o| o.get("model")?.as_str())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}
