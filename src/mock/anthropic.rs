//! Anthropic endpoints: messages (whole and streamed), token counting, models.

use std::sync::Arc;

use http::Response;
use serde::Serialize;
use serde_json::{Value, json};

use super::body::{MockBody, json_ok};
use super::control::Snapshot;
use super::request::{BadRequest, ChatRequest, parse};
use super::sse::{self, SseTx, event, push_json_str};
use super::state::{InFlight, State};
use super::text::Reply;
use crate::protocol::Protocol;

/// Chars per streamed `input_json_delta` fragment.
const PARTIAL_JSON_CHARS: usize = 8;

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u32,
    output_tokens: u32,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [Block<'a>; 1],
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
}

fn parse_chat(body: &[u8]) -> Result<ChatRequest, BadRequest> {
    let req: ChatRequest = parse(body)?;
    if req.messages.is_none() {
        return Err(BadRequest("messages: Field required".to_owned()));
    }
    Ok(req)
}

/// `POST /v1/messages`.
pub(crate) async fn messages(
    state: &Arc<State>,
    snap: &Snapshot,
    body: &[u8],
    guard: InFlight,
) -> Response<MockBody> {
    let req = match parse_chat(body) {
        Ok(r) => r,
        Err(bad) => return bad.into_response(Protocol::Anthropic),
    };
    let n = state.next_id();
    let id = format!("msg_{n}");
    let input_tokens = req.prompt_tokens();
    let reply = Reply::for_request(&req, &state.cfg.name, state.cfg.output_tokens, || {
        format!("toolu_{n}")
    });
    let usage = Usage {
        input_tokens,
        output_tokens: reply.tokens(),
    };
    if req.stream() {
        let model = req.model;
        return sse::stream(snap, guard, move |tx| {
            stream_message(tx, id, model, reply, usage)
        });
    }
    if !snap.ttft.is_zero() {
        tokio::time::sleep(snap.ttft).await;
    }
    let reply = reply.padded(snap.body_bytes);
    let (block, stop_reason, stop_sequence) = match &reply {
        Reply::Text(a) => (
            Block::Text { text: &a.text },
            a.finish.anthropic(),
            a.finish.stop_sequence(),
        ),
        Reply::Tool(t) => (
            Block::ToolUse {
                id: &t.id,
                name: &t.name,
                input: serde_json::from_str(&t.arguments).unwrap_or_default(),
            },
            "tool_use",
            None,
        ),
    };
    json_ok(&MessageOut {
        id: &id,
        kind: "message",
        role: "assistant",
        model: &req.model,
        content: [block],
        stop_reason,
        stop_sequence,
        usage,
    })
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: Usage,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: Block<'a>,
}

#[derive(Serialize)]
struct MessageDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta<'a>,
    usage: OutputUsage,
}

#[derive(Serialize)]
struct StopDelta<'a> {
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u32,
}

/// A named event with a serialized payload.
fn json_event(name: &str, payload: &impl Serialize) -> bytes::Bytes {
    event(name, &serde_json::to_vec(payload).unwrap_or_default())
}

/// The real event sequence: message_start, content_block_start, ping, deltas,
/// content_block_stop, message_delta, message_stop.
async fn stream_message(
    mut tx: SseTx,
    id: String,
    model: String,
    reply: Reply,
    usage: Usage,
) -> Result<(), sse::Closed> {
    let start = MessageStart {
        kind: "message_start",
        message: StartMessage {
            id: &id,
            kind: "message",
            role: "assistant",
            model: &model,
            content: [],
            stop_reason: None,
            stop_sequence: None,
            usage: Usage {
                input_tokens: usage.input_tokens,
                output_tokens: 1,
            },
        },
    };
    tx.send(json_event("message_start", &start)).await?;
    let content_block = match &reply {
        Reply::Text(_) => Block::Text { text: "" },
        Reply::Tool(t) => Block::ToolUse {
            id: &t.id,
            name: &t.name,
            input: Value::Object(Default::default()),
        },
    };
    let block_start = BlockStart {
        kind: "content_block_start",
        index: 0,
        content_block,
    };
    tx.send(json_event("content_block_start", &block_start))
        .await?;
    tx.send(event("ping", br#"{"type": "ping"}"#)).await?;
    let (stop_reason, stop_sequence) = match &reply {
        Reply::Text(a) => {
            for word in a.chunks() {
                tx.token(delta("text_delta", "text", word)).await?;
            }
            (a.finish.anthropic(), a.finish.stop_sequence())
        }
        Reply::Tool(t) => {
            for frag in sse::fragments(&t.arguments, PARTIAL_JSON_CHARS) {
                tx.token(delta("input_json_delta", "partial_json", frag))
                    .await?;
            }
            ("tool_use", None)
        }
    };
    tx.send(event(
        "content_block_stop",
        br#"{"type":"content_block_stop","index":0}"#,
    ))
    .await?;
    let message_delta = MessageDelta {
        kind: "message_delta",
        delta: StopDelta {
            stop_reason,
            stop_sequence,
        },
        usage: OutputUsage {
            output_tokens: usage.output_tokens,
        },
    };
    tx.send(json_event("message_delta", &message_delta)).await?;
    tx.send(event("message_stop", br#"{"type":"message_stop"}"#))
        .await
}

/// A `content_block_delta` event for block 0, built in one buffer.
fn delta(kind: &str, field: &str, value: &str) -> bytes::Bytes {
    let mut b = Vec::with_capacity(128 + value.len());
    b.extend_from_slice(b"event: content_block_delta\ndata: ");
    b.extend_from_slice(br#"{"type":"content_block_delta","index":0,"delta":{"type":""#);
    b.extend_from_slice(kind.as_bytes());
    b.extend_from_slice(b"\",\"");
    b.extend_from_slice(field.as_bytes());
    b.extend_from_slice(b"\":");
    push_json_str(&mut b, value);
    b.extend_from_slice(b"}}\n\n");
    bytes::Bytes::from(b)
}

/// `POST /v1/messages/count_tokens`.
pub(crate) fn count_tokens(body: &[u8]) -> Response<MockBody> {
    match parse_chat(body) {
        Ok(req) => json_ok(&json!({"input_tokens": req.prompt_tokens()})),
        Err(bad) => bad.into_response(Protocol::Anthropic),
    }
}

/// `GET /v1/models`.
pub(crate) fn models() -> Response<MockBody> {
    let models = [
        ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
        ("claude-haiku-4-5", "Claude Haiku 4.5"),
        ("mock-model", "Mock Model"),
    ];
    let data: Vec<Value> = models
        .iter()
        .map(|(id, display)| {
            json!({"type": "model", "id": id, "display_name": display, "created_at": "2025-01-01T00:00:00Z"})
        })
        .collect();
    json_ok(&json!({
        "data": data,
        "has_more": false,
        "first_id": models[0].0,
        "last_id": models[models.len() - 1].0,
    }))
}
