//! OpenAI Responses (`POST /v1/responses`): whole and streamed (the typed event sequence), function
//! calls, and `previous_response_id` with the conversation kept server-side (unless `store: false`).
//!
//! The request is read as a chat request (instructions as system, input items as messages,
//! `function_call_output` items as tool results), so answers are those of chat completions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::body::{MockBody, error, json_ok, json_response};
use super::control::Snapshot;
use super::request::{ChatRequest, Content, FunctionDef, Message, Role, Tool, parse};
use super::sse::{self, SseTx, event, fragments};
use super::state::{InFlight, State, unix_now};
use super::text::{Finish, Reply};
use crate::protocol::Protocol;
use crate::protocol::responses::{ResponseHead, response_object};

/// Stored conversations kept at most; past it the store starts over (a mock, not a database).
const MAX_STORED: usize = 10_000;

/// Chars per streamed function-argument fragment.
const ARGUMENT_FRAGMENT_CHARS: usize = 8;

/// Conversations by response id: each turn as (role, text).
#[derive(Default)]
pub(crate) struct Store(Mutex<HashMap<String, Vec<(Role, String)>>>);

impl Store {
    fn get(&self, id: &str) -> Option<Vec<(Role, String)>> {
        self.0.lock().ok()?.get(id).cloned()
    }

    fn put(&self, id: String, turns: Vec<(Role, String)>) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_STORED {
                m.clear();
            }
            m.insert(id, turns);
        }
    }
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The turns of `input`: a string, or items.
fn input_turns(input: Option<&Value>) -> Vec<(Role, String)> {
    match input {
        Some(Value::String(s)) => vec![(Role::User, s.clone())],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item.get("type").and_then(Value::as_str) {
                Some("function_call_output") => (Role::Tool, text_of(item.get("output"))),
                Some("function_call") => (Role::Other, text_of(item.get("arguments"))),
                _ => {
                    let role = match item.get("role").and_then(Value::as_str) {
                        Some("user") => Role::User,
                        _ => Role::Other,
                    };
                    (role, text_of(item.get("content")))
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The request as the chat request the answer is made from.
fn as_chat(req: &Value, turns: &[(Role, String)]) -> ChatRequest {
    let s = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or_default();
    let tools = req.get("tools").and_then(Value::as_array).map(|tools| {
        tools
            .iter()
            .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
            .filter_map(|t| t.get("name").and_then(Value::as_str))
            .map(|name| Tool {
                name: None,
                function: Some(FunctionDef {
                    name: name.to_owned(),
                }),
            })
            .collect()
    });
    ChatRequest {
        model: s("model").to_owned(),
        messages: Some(
            turns
                .iter()
                .map(|(role, text)| Message {
                    role: *role,
                    content: Content::Text(text.clone()),
                })
                .collect(),
        ),
        system: Content::Text(s("instructions").to_owned()),
        stream: req.get("stream").and_then(Value::as_bool),
        max_tokens: None,
        max_completion_tokens: req
            .get("max_output_tokens")
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        stop: None,
        stop_sequences: None,
        tools,
        tool_choice: req.get("tool_choice").cloned(),
        stream_options: None,
    }
}

/// `POST /v1/responses`.
pub(crate) async fn create(
    state: &Arc<State>,
    snap: &Snapshot,
    body: &[u8],
    guard: InFlight,
) -> Response<MockBody> {
    let req: Value = match parse(body) {
        Ok(r) => r,
        Err(bad) => return bad.into_response(Protocol::Openai),
    };
    if !req.is_object() || req.get("model").and_then(Value::as_str).is_none() {
        let msg = "Missing required parameter: 'model'.";
        return error(Protocol::Openai, StatusCode::BAD_REQUEST, msg);
    }
    let mut turns = Vec::new();
    let previous = req
        .get("previous_response_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(prev) = &previous {
        match state.responses.get(prev) {
            Some(t) => turns = t,
            None => return not_found(prev),
        }
    }
    turns.extend(input_turns(req.get("input")));
    let chat = as_chat(&req, &turns);
    let n = state.next_id();
    let id = format!("resp_{:012x}{n:04}", rand::random::<u64>() >> 16);
    let reply = Reply::for_request(&chat, &state.cfg.name, state.cfg.output_tokens, || {
        format!("call_{n}")
    });
    let usage = json!({
        "input_tokens": chat.prompt_tokens(),
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.tokens(),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": chat.prompt_tokens() + reply.tokens(),
    });
    let said = match &reply {
        Reply::Text(a) => (Role::Other, a.text.clone()),
        Reply::Tool(t) => (Role::Other, t.arguments.clone()),
    };
    if req.get("store").and_then(Value::as_bool) != Some(false) {
        let mut kept = turns;
        kept.push(said);
        state.responses.put(id.clone(), kept);
    }
    let r = Resp {
        id,
        n,
        created: unix_now(),
        req,
        previous,
    };
    if r.req.get("stream").and_then(Value::as_bool) == Some(true) {
        return sse::stream(snap, guard, move |tx| stream(tx, r, reply, usage));
    }
    if !snap.ttft.is_zero() {
        tokio::time::sleep(snap.ttft).await;
    }
    let reply = reply.padded(snap.body_bytes);
    json_ok(&r.object(status(&reply), vec![r.item(&reply, true)], usage))
}

/// `completed`, or `incomplete` when `max_output_tokens` cut the answer.
fn status(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text(a) if a.finish == Finish::Length => "incomplete",
        _ => "completed",
    }
}

fn not_found(id: &str) -> Response<MockBody> {
    let body = json!({"error": {
        "message": format!("Previous response with id '{id}' not found."),
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }});
    json_response(StatusCode::NOT_FOUND, body.to_string())
}

/// One response being answered.
struct Resp {
    id: String,
    n: u64,
    created: u64,
    req: Value,
    previous: Option<String>,
}

impl Resp {
    fn object(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let head = ResponseHead {
            id: &self.id,
            model: self.req.get("model").and_then(Value::as_str).unwrap_or(""),
            created_at: self.created,
            status,
            store: self.req.get("store").and_then(Value::as_bool) != Some(false),
            previous_response_id: self.previous.as_deref(),
        };
        response_object(&self.req, &head, output, usage)
    }

    /// The output item of `reply`, finished or as first announced.
    fn item(&self, reply: &Reply, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match reply {
            Reply::Text(a) => json!({
                "type": "message", "id": format!("msg_{}", self.n), "status": status, "role": "assistant",
                "content": if done {
                    json!([{"type": "output_text", "text": a.text, "annotations": [], "logprobs": []}])
                } else {
                    json!([])
                },
            }),
            Reply::Tool(t) => json!({
                "type": "function_call", "id": format!("fc_{}", self.n), "call_id": t.id,
                "name": t.name, "arguments": if done { t.arguments.as_str() } else { "" }, "status": status,
            }),
        }
    }
}

/// Numbers events as they are sent.
struct Seq(u64);

impl Seq {
    fn frame(&mut self, kind: &str, mut v: Value) -> Bytes {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(self.0);
        self.0 += 1;
        event(kind, v.to_string().as_bytes())
    }
}

async fn stream(mut tx: SseTx, r: Resp, reply: Reply, usage: Value) -> Result<(), sse::Closed> {
    let mut seq = Seq(0);
    let pending = r.object("in_progress", Vec::new(), Value::Null);
    tx.send(seq.frame("response.created", json!({"response": pending})))
        .await?;
    tx.send(seq.frame("response.in_progress", json!({"response": pending})))
        .await?;
    tx.send(seq.frame(
        "response.output_item.added",
        json!({"output_index": 0, "item": r.item(&reply, false)}),
    ))
    .await?;
    match &reply {
        Reply::Text(a) => {
            let item_id = format!("msg_{}", r.n);
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
            let at = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
            let with = |k: &str, v: Value| {
                let mut o = at.clone();
                o[k] = v;
                o
            };
            tx.send(seq.frame("response.content_part.added", with("part", part(""))))
                .await?;
            for word in a.chunks() {
                let mut d = with("delta", json!(word));
                d["logprobs"] = json!([]);
                tx.token(seq.frame("response.output_text.delta", d)).await?;
            }
            let mut d = with("text", json!(a.text));
            d["logprobs"] = json!([]);
            tx.send(seq.frame("response.output_text.done", d)).await?;
            tx.send(seq.frame("response.content_part.done", with("part", part(&a.text))))
                .await?;
        }
        Reply::Tool(t) => {
            let item_id = format!("fc_{}", r.n);
            for frag in fragments(&t.arguments, ARGUMENT_FRAGMENT_CHARS) {
                tx.token(seq.frame(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": 0, "delta": frag}),
                ))
                .await?;
            }
            tx.send(seq.frame(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "name": t.name, "arguments": t.arguments}),
            ))
            .await?;
        }
    }
    let item = r.item(&reply, true);
    tx.send(seq.frame(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    ))
    .await?;
    let status = status(&reply);
    let done = r.object(status, vec![item], usage);
    let kind = format!("response.{status}");
    tx.send(seq.frame(&kind, json!({"response": done}))).await
}
