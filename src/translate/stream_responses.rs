//! Chat Completions chunks → the Responses API's typed event stream (and Anthropic events through
//! chat chunks first: [`MessagesToResponsesStream`]).
//!
//! Events: `response.created`, `response.in_progress`; for text `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`…, then `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done`; for each tool call
//! `response.output_item.added`, `response.function_call_arguments.delta`…,
//! `response.function_call_arguments.done`, `response.output_item.done`; last
//! `response.completed` (or `response.incomplete` when cut by `max_output_tokens`) carrying the
//! whole response and its usage. Every event has its `sequence_number`. An upstream error chunk
//! becomes an `error` event.

use bytes::Bytes;
use serde_json::{Value, json};

use super::MessagesToChatStream;
use super::common::now_unix;
use super::responses::{Answer, bare_id, function_call_item, message_item, response_object};
use super::sse::{SseEvent, SseParser, encode_sse};
use super::usage::{Usage, UsageDetail};

/// The output item being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text(usize),
    /// (chat tool-call index, output index)
    Call(u64, usize),
}

pub struct ChatToResponsesStream {
    /// The client's request without its input (settings echoed in the response object).
    req: Value,
    model: String,
    created: u64,
    seq: u64,
    started: bool,
    answer: Answer,
    open: Open,
    next_output: usize,
    /// Output index of the message item, when there is one.
    text_index: Option<usize>,
    done: bool,
}

impl ChatToResponsesStream {
    pub fn new(req: &Value, client_model: &str) -> Self {
        let mut req = req.clone();
        if let Some(o) = req.as_object_mut() {
            o.remove("input");
        }
        ChatToResponsesStream {
            req,
            model: client_model.to_string(),
            created: now_unix(),
            seq: 0,
            started: false,
            answer: Answer::default(),
            open: Open::None,
            next_output: 0,
            text_index: None,
            done: false,
        }
    }

    fn event(&mut self, out: &mut Vec<Bytes>, kind: &str, mut v: Value) {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(encode_sse(Some(kind), &v.to_string()));
    }

    fn response(&self, finished: bool) -> Value {
        response_object(&self.req, &self.model, &self.answer, self.created, finished)
    }

    fn start(&mut self, out: &mut Vec<Bytes>, chunk: &Value) {
        if self.started {
            return;
        }
        self.started = true;
        self.answer.id = bare_id(chunk.get("id").and_then(Value::as_str));
        if let Some(c) = chunk.get("created").and_then(Value::as_u64) {
            self.created = c;
        }
        let r = self.response(false);
        self.event(out, "response.created", json!({"response": r}));
        let r = self.response(false);
        self.event(out, "response.in_progress", json!({"response": r}));
    }

    fn msg_id(&self) -> String {
        format!("msg_{}", self.answer.id)
    }

    fn text(&mut self, out: &mut Vec<Bytes>, delta: &str) {
        let index = match self.open {
            Open::Text(i) => i,
            _ => {
                self.close(out);
                let i = self.next_output;
                self.next_output += 1;
                self.text_index = Some(i);
                self.open = Open::Text(i);
                let mut item = message_item(&self.answer.id, "", "in_progress");
                item["content"] = json!([]);
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": i, "item": item}),
                );
                let id = self.msg_id();
                self.event(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": i, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                );
                i
            }
        };
        self.answer.text.push_str(delta);
        let id = self.msg_id();
        self.event(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }

    fn call_delta(&mut self, out: &mut Vec<Bytes>, tc: &Value) {
        let chat_index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
        let f = tc.get("function");
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let (n, output_index) = match self.open {
            Open::Call(ci, oi) if ci == chat_index => (self.answer.calls.len() - 1, oi),
            _ => {
                self.close(out);
                let oi = self.next_output;
                self.next_output += 1;
                self.open = Open::Call(chat_index, oi);
                let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
                let call_id = s(tc.get("id"));
                let name = s(f.and_then(|f| f.get("name")));
                self.answer.calls.push((call_id, name, String::new()));
                let n = self.answer.calls.len() - 1;
                let (call_id, name, _) = &self.answer.calls[n];
                let item = function_call_item(&self.answer.id, n, call_id, name, "", "in_progress");
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": oi, "item": item}),
                );
                (n, oi)
            }
        };
        if args.is_empty() {
            return;
        }
        self.answer.calls[n].2.push_str(args);
        let item_id = format!("fc_{}_{n}", self.answer.id);
        self.event(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": args}),
        );
    }

    /// Finish the open output item.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Text(i) => {
                let id = self.msg_id();
                let text = self.answer.text.clone();
                self.event(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
                );
                let item = message_item(&self.answer.id, &text, "completed");
                self.event(
                    out,
                    "response.output_item.done",
                    json!({"output_index": i, "item": item}),
                );
            }
            Open::Call(_, oi) => {
                let n = self.answer.calls.len() - 1;
                let (call_id, name, args) = self.answer.calls[n].clone();
                let item_id = format!("fc_{}_{n}", self.answer.id);
                self.event(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": oi, "name": name, "arguments": args}),
                );
                let item =
                    function_call_item(&self.answer.id, n, &call_id, &name, &args, "completed");
                self.event(
                    out,
                    "response.output_item.done",
                    json!({"output_index": oi, "item": item}),
                );
            }
        }
    }

    /// One chat chunk (already parsed).
    pub fn push_chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if let Some(err) = chunk.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream stream reported an error");
            let code = err.get("code").cloned().unwrap_or(json!("upstream_error"));
            self.event(
                &mut out,
                "error",
                json!({"code": code, "message": msg, "param": null, "error": err}),
            );
            self.done = true;
            return out;
        }
        self.start(&mut out, chunk);
        if let Some(u) = chunk
            .get("usage")
            .filter(|u| u.is_object())
            .and_then(UsageDetail::from_openai)
        {
            self.answer.usage = Some(u);
        }
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return out;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(t) = delta.get("content").and_then(Value::as_str)
            && !t.is_empty()
        {
            self.text(&mut out, t);
        }
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.call_delta(&mut out, tc);
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.answer.finish = Some(f.to_string());
        }
        out
    }

    pub fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        let data = ev.data.trim();
        if !data.starts_with('{') {
            return Vec::new(); // [DONE], keep-alives
        }
        match serde_json::from_str::<Value>(data) {
            Ok(v) => self.push_chunk(&v),
            Err(_) => Vec::new(),
        }
    }

    /// The upstream completed: close the open item and send the whole response.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.done = true;
        self.start(&mut out, &Value::Null);
        if self.text_index.is_none() && self.answer.calls.is_empty() {
            // Nothing was said: an empty message, as the whole-body translation gives.
            self.text(&mut out, "");
        }
        self.close(&mut out);
        let r = self.response(true);
        let kind = match r["status"].as_str() {
            Some("incomplete") => "response.incomplete",
            _ => "response.completed",
        };
        self.event(&mut out, kind, json!({"response": r}));
        out
    }

    pub fn usage(&self) -> Option<Usage> {
        self.answer.usage.map(|u| u.usage)
    }
}

/// Anthropic events → chat chunks → Responses events.
pub struct MessagesToResponsesStream {
    chat: MessagesToChatStream,
    parser: SseParser,
    responses: ChatToResponsesStream,
}

impl MessagesToResponsesStream {
    pub fn new(req: &Value, client_model: &str) -> Self {
        MessagesToResponsesStream {
            chat: MessagesToChatStream::new(client_model, true),
            parser: SseParser::new(),
            responses: ChatToResponsesStream::new(req, client_model),
        }
    }

    fn relay(&mut self, frames: Vec<Bytes>) -> Vec<Bytes> {
        let mut out = Vec::new();
        for f in frames {
            for ev in self.parser.push(&f) {
                out.extend(self.responses.push(&ev));
            }
        }
        out
    }

    pub fn push(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        let frames = self.chat.push(ev);
        self.relay(frames)
    }

    pub fn finish(&mut self) -> Vec<Bytes> {
        let frames = self.chat.finish();
        let mut out = self.relay(frames);
        out.extend(self.responses.finish());
        out
    }

    pub fn usage(&self) -> Option<Usage> {
        self.chat.usage().or_else(|| self.responses.usage())
    }
}
