//! Anthropic event stream → OpenAI chunks (`chat.completion.chunk`, or legacy `text_completion`).
//!
//! Chat output: a role chunk, content / tool-call delta chunks, a finish chunk (at
//! `message_delta`), the usage chunk (`choices: []`, only with `include_usage`, which also puts
//! `"usage": null` on every other chunk, as OpenAI does), then `data: [DONE]`. An upstream
//! `error` event becomes an OpenAI error frame (`data: {"error":{..}}`) and ends the stream;
//! so does an upstream that stops before `message_delta`. Thinking blocks are skipped.

use bytes::Bytes;
use serde_json::{Value, json};

use super::common::{now_unix, openai_id, stop_reason_to_finish};
use super::error::anthropic_type_to_openai;
use super::sse::{SseEvent, encode_sse};
use super::usage::{Usage, UsageDetail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Chat,
    Completion,
}

/// The shared state machine behind [`MessagesToChatStream`] and the completion stream.
#[derive(Debug)]
pub(crate) struct AnthropicToOpenAi {
    flavor: Flavor,
    model: String,
    include_usage: bool,
    id: String,
    created: u64,
    started: bool,
    /// (Anthropic block index, OpenAI tool-call index) of each tool_use block.
    tools: Vec<(u64, u64)>,
    finish_reason: Option<&'static str>,
    finish_sent: bool,
    usage: Option<UsageDetail>,
    done: bool,
}

impl AnthropicToOpenAi {
    pub fn new(flavor: Flavor, client_model: &str, include_usage: bool) -> Self {
        AnthropicToOpenAi {
            flavor,
            model: client_model.to_string(),
            include_usage,
            id: String::new(),
            created: now_unix(),
            started: false,
            tools: Vec::new(),
            finish_reason: None,
            finish_sent: false,
            usage: None,
            done: false,
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(|d| d.usage)
    }

    fn prefix(&self) -> &'static str {
        match self.flavor {
            Flavor::Chat => "chatcmpl-",
            Flavor::Completion => "cmpl-",
        }
    }

    fn frame(&self, mut body: Value, usage: Value) -> Bytes {
        let object = match self.flavor {
            Flavor::Chat => "chat.completion.chunk",
            Flavor::Completion => "text_completion",
        };
        body["id"] = json!(self.id);
        body["object"] = json!(object);
        body["created"] = json!(self.created);
        body["model"] = json!(self.model);
        if self.include_usage {
            body["usage"] = usage;
        }
        encode_sse(None, &body.to_string())
    }

    /// A chunk with one choice: chat `delta`, or completion `text` (taken from `delta.content`).
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let choice = match self.flavor {
            Flavor::Chat => {
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Flavor::Completion => json!({
                "index": 0,
                "text": delta.get("content").and_then(Value::as_str).unwrap_or(""),
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        self.frame(json!({"choices": [choice]}), Value::Null)
    }

    fn ensure_started(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = openai_id(None, self.prefix());
        }
        if self.flavor == Flavor::Chat {
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    fn error_frame(&mut self, kind: &str, message: &str) -> Bytes {
        self.done = true;
        let body =
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
        encode_sse(None, &body.to_string())
    }

    /// Finish chunk (if not yet sent), usage chunk, `[DONE]`.
    fn terminate(&mut self, out: &mut Vec<Bytes>) {
        self.ensure_started(out);
        if !self.finish_sent {
            self.finish_sent = true;
            let reason = self.finish_reason.unwrap_or("stop");
            out.push(self.chunk(json!({}), Some(reason)));
        }
        if self.include_usage {
            let usage = self.usage.unwrap_or_default().to_openai();
            out.push(self.frame(json!({"choices": []}), usage));
        }
        out.push(encode_sse(None, "[DONE]"));
        self.done = true;
    }

    pub fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            tracing::debug!(data = %ev.data, "ignoring non-JSON anthropic stream event");
            return out;
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                let msg = &data["message"];
                if self.id.is_empty() {
                    self.id = openai_id(msg.get("id").and_then(Value::as_str), self.prefix());
                }
                if let Some(u) = msg.get("usage").and_then(UsageDetail::from_anthropic) {
                    self.usage = Some(u);
                }
                self.ensure_started(&mut out);
            }
            "content_block_start" => {
                self.ensure_started(&mut out);
                let index = data["index"].as_u64().unwrap_or(0);
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("text") => {
                        let text = block["text"].as_str().unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    Some("tool_use") if self.flavor == Flavor::Chat => {
                        let tool = self.tools.len() as u64;
                        self.tools.push((index, tool));
                        out.push(self.chunk(
                            json!({"tool_calls": [{
                                "index": tool,
                                "id": block["id"],
                                "type": "function",
                                "function": {"name": block["name"], "arguments": ""},
                            }]}),
                            None,
                        ));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                self.ensure_started(&mut out);
                let index = data["index"].as_u64().unwrap_or(0);
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    Some("input_json_delta") => {
                        let partial = delta["partial_json"].as_str().unwrap_or("");
                        let tool = self
                            .tools
                            .iter()
                            .find(|(b, _)| *b == index)
                            .map(|(_, t)| *t);
                        if let Some(tool) = tool
                            && !partial.is_empty()
                        {
                            out.push(self.chunk(
                                json!({"tool_calls": [{"index": tool, "function": {"arguments": partial}}]}),
                                None,
                            ));
                        }
                    }
                    _ => {} // thinking_delta, signature_delta, citations_delta
                }
            }
            "message_delta" => {
                if let Some(u) = data.get("usage") {
                    let cur = self.usage.get_or_insert_with(UsageDetail::default);
                    if let Some(o) = u.get("output_tokens").and_then(Value::as_u64) {
                        cur.usage.output_tokens = o;
                    }
                    if u.get("input_tokens").is_some()
                        && let Some(d) = UsageDetail::from_anthropic(u)
                    {
                        cur.usage.input_tokens = d.usage.input_tokens;
                        cur.cache_read = d.cache_read;
                        cur.cache_creation = d.cache_creation;
                    }
                }
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    let mut reason = stop_reason_to_finish(reason);
                    if self.flavor == Flavor::Completion && reason == "tool_calls" {
                        reason = "stop";
                    }
                    self.finish_reason = Some(reason);
                    self.ensure_started(&mut out);
                    self.finish_sent = true;
                    out.push(self.chunk(json!({}), Some(reason)));
                }
            }
            "message_stop" => self.terminate(&mut out),
            "error" => {
                let err = &data["error"];
                let kind = anthropic_type_to_openai(err["type"].as_str().unwrap_or("api_error"));
                let message = err["message"].as_str().unwrap_or("upstream stream error");
                out.push(self.error_frame(kind, message));
            }
            _ => {} // ping, content_block_stop, unknown
        }
        out
    }

    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if self.finish_sent {
            // Upstream omitted message_stop after a complete message: close politely.
            self.terminate(&mut out);
        } else {
            out.push(self.error_frame(
                "server_error",
                "upstream stream ended before the message was complete",
            ));
        }
        out
    }
}

/// Anthropic upstream events → OpenAI `chat.completion.chunk` frames, ending with `[DONE]`.
#[derive(Debug)]
pub struct MessagesToChatStream {
    inner: AnthropicToOpenAi,
}

impl MessagesToChatStream {
    /// `include_usage`: the client asked for `stream_options.include_usage`.
    pub fn new(client_model: &str, include_usage: bool) -> Self {
        MessagesToChatStream {
            inner: AnthropicToOpenAi::new(Flavor::Chat, client_model, include_usage),
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
