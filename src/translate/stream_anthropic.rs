//! OpenAI `chat.completion.chunk` stream → Anthropic event stream.
//!
//! Emits `message_start` on the first chunk (its usage is zero: OpenAI reports usage only at
//! the end), text and `tool_use` content blocks as deltas arrive (a new block whenever the
//! kind or tool-call index changes), and — at `[DONE]`, or at the end of the upstream if it
//! omitted `[DONE]` after a `finish_reason` — `message_delta` (stop reason and the full usage
//! from the `include_usage` chunk, input included) and `message_stop`. An upstream error
//! chunk, or an upstream that ends before any `finish_reason`, becomes an `error` event.

use bytes::Bytes;
use serde_json::{Value, json};

use super::common::{anthropic_id, finish_to_stop_reason, fresh_suffix};
use super::sse::{SseEvent, encode_sse};
use super::usage::{Usage, UsageDetail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    /// (Anthropic block index, OpenAI tool-call index)
    Tool(u64, u64),
}

/// OpenAI upstream chunks (and `[DONE]`) → Anthropic `message_start` … `message_stop` events.
#[derive(Debug)]
pub struct ChatToMessagesStream {
    model: String,
    started: bool,
    open: Option<Open>,
    next_block: u64,
    /// (OpenAI tool-call index, Anthropic block index) of every tool block opened.
    tools: Vec<(u64, u64)>,
    stop_reason: Option<&'static str>,
    usage: Option<UsageDetail>,
    done: bool,
}

fn event(name: &str, data: Value) -> Bytes {
    encode_sse(Some(name), &data.to_string())
}

impl ChatToMessagesStream {
    pub fn new(client_model: &str) -> Self {
        ChatToMessagesStream {
            model: client_model.to_string(),
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            stop_reason: None,
            usage: None,
            done: false,
        }
    }

    /// Usage reported by the upstream (its `include_usage` chunk), if any yet.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(|d| d.usage)
    }

    fn ensure_started(&mut self, id: Option<&str>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": anthropic_id(id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": self.usage.unwrap_or_default().to_anthropic(),
            }}),
        ));
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        let index = match self.open.take() {
            Some(Open::Text(i) | Open::Tool(i, _)) => i,
            None => return,
        };
        out.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }

    fn open_block(&mut self, kind: Open, block: Value, out: &mut Vec<Bytes>) {
        self.close_block(out);
        let index = match kind {
            Open::Text(i) | Open::Tool(i, _) => i,
        };
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open = Some(kind);
        self.next_block += 1;
    }

    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                let i = self.next_block;
                self.open_block(Open::Text(i), json!({"type": "text", "text": ""}), out);
                i
            }
        };
        out.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    fn tool_delta(&mut self, position: usize, call: &Value, out: &mut Vec<Bytes>) {
        let tool = call["index"].as_u64().unwrap_or(position as u64);
        let block = match self.open {
            Some(Open::Tool(b, t)) if t == tool => b,
            _ => match self.tools.iter().find(|(t, _)| *t == tool) {
                // A delta for an earlier (already closed) call: interleaved upstream; send it
                // against that call's block, which clients accumulate by index.
                Some(&(_, b)) => b,
                None => {
                    let b = self.next_block;
                    let id = call["id"]
                        .as_str()
                        .map_or_else(|| format!("toolu_{}", fresh_suffix()), str::to_string);
                    let name = call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    self.tools.push((tool, b));
                    self.open_block(
                        Open::Tool(b, tool),
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        out,
                    );
                    b
                }
            },
        };
        let partial = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !partial.is_empty() {
            out.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": block,
                       "delta": {"type": "input_json_delta", "partial_json": partial}}),
            ));
        }
    }

    fn error(&mut self, message: &str, out: &mut Vec<Bytes>) {
        self.done = true;
        out.push(event(
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        ));
    }

    /// Close the open block, then `message_delta` and `message_stop`.
    fn terminate(&mut self, out: &mut Vec<Bytes>) {
        self.ensure_started(None, out);
        self.close_block(out);
        out.push(event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                   "usage": self.usage.unwrap_or_default().to_anthropic()}),
        ));
        out.push(event("message_stop", json!({"type": "message_stop"})));
        self.done = true;
    }

    /// Translate one upstream chunk into the events to send now.
    pub fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.terminate(&mut out);
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            tracing::debug!(data, "ignoring non-JSON openai stream event");
            return out;
        };
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| err.to_string(), str::to_string);
            self.error(&message, &mut out);
            return out;
        }
        if let Some(u) = chunk.get("usage").and_then(UsageDetail::from_openai) {
            self.usage = Some(u);
        }
        self.ensure_started(chunk.get("id").and_then(Value::as_str), &mut out);
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["index"].as_u64().unwrap_or(0) == 0))
        else {
            return out;
        };
        let delta = &choice["delta"];
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str) {
                self.text(text, &mut out);
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                self.tool_delta(position, call, &mut out);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.close_block(&mut out);
            self.stop_reason = Some(finish_to_stop_reason(reason));
        }
        out
    }

    /// The upstream stream ended: events still owed to the client (none if already complete).
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if self.stop_reason.is_some() {
            self.terminate(&mut out);
        } else {
            self.error(
                "upstream stream ended before the message was complete",
                &mut out,
            );
        }
        out
    }
}
