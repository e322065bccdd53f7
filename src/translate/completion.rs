//! Legacy OpenAI completions (`/v1/completions`) on an Anthropic backend: request, response, stream.
//!
//! The prompt becomes a single user turn. `stream_options` is consumed by the gateway.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::common::{as_obj, is_off, now_unix, openai_id};
use super::error::{TranslateError, invalid, unsupported};
use super::request_to_anthropic::common_params;
use super::response::read_anthropic_message;
use super::sse::SseEvent;
use super::stream_openai::{AnthropicToOpenAi, Flavor};
use super::usage::Usage;

/// Translate a legacy completions body (`prompt`: a string or a one-element array of strings)
/// into an Anthropic messages body for `model`.
pub fn completion_request_to_messages(
    req: &Value,
    model: &str,
    default_max_tokens: u32,
) -> Result<Value, TranslateError> {
    let obj = as_obj(req, "body")?;
    for (key, reason) in [
        ("suffix", "Anthropic has no fill-in-the-middle"),
        ("echo", "Anthropic cannot echo the prompt"),
    ] {
        if !is_off(obj.get(key)) {
            return Err(unsupported(key, reason));
        }
    }
    if let Some(best_of) = obj.get("best_of").filter(|v| !v.is_null())
        && best_of.as_u64() != Some(1)
    {
        return Err(unsupported(
            "best_of",
            "Anthropic generates a single candidate",
        ));
    }
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => s.as_str(),
            [] => return Err(invalid("prompt", "expected a non-empty prompt")),
            [Value::String(_), ..] => {
                return Err(unsupported(
                    "prompt",
                    "Anthropic completes one prompt per request",
                ));
            }
            _ => {
                return Err(unsupported(
                    "prompt[0]",
                    "token-id prompts cannot be sent to Anthropic",
                ));
            }
        },
        _ => {
            return Err(invalid(
                "prompt",
                "expected a string or an array of strings",
            ));
        }
    };
    if prompt.is_empty() {
        return Err(invalid("prompt", "expected a non-empty prompt"));
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert(
        "messages".into(),
        json!([{"role": "user", "content": [{"type": "text", "text": prompt}]}]),
    );
    common_params(obj, &mut out, default_max_tokens)?;
    Ok(Value::Object(out))
}

/// Translate an Anthropic message response into a legacy `text_completion`.
pub fn messages_response_to_completion(
    resp: &Value,
    client_model: &str,
) -> Result<Value, TranslateError> {
    let m = read_anthropic_message(resp)?;
    let finish = match m.finish_reason.as_str() {
        Some("tool_calls") => json!("stop"),
        _ => m.finish_reason,
    };
    Ok(json!({
        "id": openai_id(m.id, "cmpl-"),
        "object": "text_completion",
        "created": now_unix(),
        "model": client_model,
        "choices": [{"text": m.text, "index": 0, "logprobs": null, "finish_reason": finish}],
        "usage": m.usage.to_openai(),
    }))
}

/// Anthropic upstream events → legacy `text_completion` chunk frames, ending with `[DONE]`.
#[derive(Debug)]
pub struct MessagesToCompletionStream {
    inner: AnthropicToOpenAi,
}

impl MessagesToCompletionStream {
    /// `include_usage`: the client asked for `stream_options.include_usage`.
    pub fn new(client_model: &str, include_usage: bool) -> Self {
        MessagesToCompletionStream {
            inner: AnthropicToOpenAi::new(Flavor::Completion, client_model, include_usage),
        }
    }

    /// Translate one upstream event into the frames to send now.
    pub fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        self.inner.push(ev)
    }

    /// The upstream stream ended: frames still owed to the client (none if already complete).
    pub fn finish(&mut self) -> Vec<Bytes> {
        self.inner.finish()
    }

    /// Usage reported by the upstream so far.
    pub fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }
}
