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

/// A stored response: the conversation up to it (each turn as (role, text)), its own input
/// items, and the response object.
#[derive(Clone)]
struct Stored {
    turns: Vec<(Role, String)>,
    input: Vec<Value>,
    object: Value,
}

/// Stored responses by id.
#[derive(Default)]
pub(crate) struct Store(Mutex<HashMap<String, Stored>>);

impl Store {
    fn get(&self, id: &str) -> Option<Stored> {
        self.0.lock().ok()?.get(id).cloned()
    }

    fn put(&self, id: String, stored: Stored) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_STORED {
                m.clear();
            }
            m.insert(id, stored);
        }
    }

    fn remove(&self, id: &str) -> bool {
        self.0.lock().is_ok_and(|mut m| m.remove(id).is_some())
    }
}

/// `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`.
pub(crate) fn stored(state: &State, delete: bool, rest: &str) -> Response<MockBody> {
    let (id, items) = match rest.strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    if delete && !items {
        if !state.responses.remove(id) {
            return response_not_found(id, "Response");
        }
        return json_ok(&json!({"id": id, "object": "response", "deleted": true}));
    }
    let Some(s) = state.responses.get(id) else {
        return response_not_found(id, "Response");
    };
    if !items {
        return json_ok(&s.object);
    }
    let data: Vec<Value> = s
        .input
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mut item = item.clone();
            if item.get("id").is_none() {
                item["id"] = json!(format!("item_{i}"));
            }
            item
        })
        .collect();
    json_ok(&json!({"object": "list", "data": data, "has_more": false,
        "first_id": data.first().map(|d| d["id"].clone()), "last_id": data.last().map(|d| d["id"].clone())}))
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
            Some(s) => turns = s.turns,
            None => return response_not_found(prev, "Previous response"),
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
    let r = Resp {
        id,
        n,
        created: unix_now(),
        req,
        previous,
    };
    if r.req.get("store").and_then(Value::as_bool) != Some(false) {
        let mut kept = turns;
        kept.push(said);
        let input = match r.req.get("input") {
            Some(Value::String(s)) => {
                vec![
                    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": s}]}),
                ]
            }
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        let object = r.object(status(&reply), vec![r.item(&reply, true)], usage.clone());
        let stored = Stored {
            turns: kept,
            input,
            object,
        };
        state.responses.put(r.id.clone(), stored);
    }
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

/// 404 for an unknown response id (`what`: "Response" or "Previous response").
fn response_not_found(id: &str, what: &str) -> Response<MockBody> {
    let (param, code) = match what {
        "Response" => (Value::Null, "response_not_found"),
        _ => (json!("previous_response_id"), "previous_response_not_found"),
    };
    let body = json!({"error": {
        "message": format!("{what} with id '{id}' not found."),
        "type": "invalid_request_error",
        "param": param,
        "code": code,
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
