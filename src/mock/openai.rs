//! OpenAI endpoints: chat completions (whole, streamed, tool calls) and models; shared chunk framing.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use super::body::{MockBody, error, json_ok};
use super::control::Snapshot;
use super::request::{ChatRequest, parse};
use super::sse::{self, DONE, SseTx, push_json_str};
use super::state::{InFlight, State, unix_now};
use super::text::Reply;
use crate::protocol::Protocol;

/// Chars per streamed tool-argument fragment.
const ARGUMENT_FRAGMENT_CHARS: usize = 8;

/// OpenAI `usage`.
#[derive(Serialize, Clone, Copy)]
pub(super) struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl Usage {
    pub(super) fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    usage: Usage,
    system_fingerprint: Option<&'a str>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat(
    state: &Arc<State>,
    snap: &Snapshot,
    body: &[u8],
    guard: InFlight,
) -> Response<MockBody> {
    let req: ChatRequest = match parse(body) {
        Ok(r) => r,
        Err(bad) => return bad.into_response(Protocol::Openai),
    };
    if req.messages.is_none() {
        let msg = "Missing required parameter: 'messages'.";
        return error(Protocol::Openai, StatusCode::BAD_REQUEST, msg);
    }
    let n = state.next_id();
    let id = format!("chatcmpl-{n}");
    let created = unix_now();
    let prompt_tokens = req.prompt_tokens();
    let reply = Reply::for_request(&req, &state.cfg.name, state.cfg.output_tokens, || {
        format!("call_{n}")
    });
    let usage = Usage::new(prompt_tokens, reply.tokens());
    if req.stream() {
        let chunks = ChunkWriter::new(
            &id,
            "chat.completion.chunk",
            created,
            &req.model,
            req.include_usage(),
        );
        return sse::stream(snap, guard, move |tx| stream_chat(tx, chunks, reply, usage));
    }
    if !snap.ttft.is_zero() {
        tokio::time::sleep(snap.ttft).await;
    }
    let reply = reply.padded(snap.body_bytes);
    let (message, finish) = match &reply {
        Reply::Text(a) => (
            AssistantMessage {
                role: "assistant",
                content: Some(&a.text),
                refusal: None,
                tool_calls: None,
            },
            a.finish.openai(),
        ),
        Reply::Tool(t) => (
            AssistantMessage {
                role: "assistant",
                content: None,
                refusal: None,
                tool_calls: Some([ToolCallOut {
                    id: &t.id,
                    kind: "function",
                    function: FunctionOut {
                        name: &t.name,
                        arguments: &t.arguments,
                    },
                }]),
            },
            "tool_calls",
        ),
    };
    json_ok(&ChatCompletion {
        id: &id,
        object: "chat.completion",
        created,
        model: &req.model,
        choices: [ChatChoice {
            index: 0,
            message,
            logprobs: None,
            finish_reason: finish,
        }],
        usage,
        system_fingerprint: None,
    })
}

async fn stream_chat(
    mut tx: SseTx,
    w: ChunkWriter,
    reply: Reply,
    usage: Usage,
) -> Result<(), sse::Closed> {
    let finish = match &reply {
        Reply::Text(a) => {
            tx.send(w.choice(|b| {
                b.extend_from_slice(br#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#)
            }))
            .await?;
            for word in a.chunks() {
                tx.token(w.choice(|b| {
                    b.extend_from_slice(br#"{"index":0,"delta":{"content":"#);
                    push_json_str(b, word);
                    b.extend_from_slice(br#"},"logprobs":null,"finish_reason":null}"#);
                }))
                .await?;
            }
            a.finish.openai()
        }
        Reply::Tool(t) => {
            tx.send(w.choice(|b| {
                b.extend_from_slice(br#"{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"#);
                push_json_str(b, &t.id);
                b.extend_from_slice(br#","type":"function","function":{"name":"#);
                push_json_str(b, &t.name);
                b.extend_from_slice(br#","arguments":""}}]},"logprobs":null,"finish_reason":null}"#);
            }))
            .await?;
            for frag in sse::fragments(&t.arguments, ARGUMENT_FRAGMENT_CHARS) {
                tx.token(w.choice(|b| {
                    b.extend_from_slice(
                        br#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"#,
                    );
                    push_json_str(b, frag);
                    b.extend_from_slice(br#"}}]},"logprobs":null,"finish_reason":null}"#);
                }))
                .await?;
            }
            "tool_calls"
        }
    };
    tx.send(w.choice(|b| {
        b.extend_from_slice(br#"{"index":0,"delta":{},"logprobs":null,"finish_reason":""#);
        b.extend_from_slice(finish.as_bytes());
        b.extend_from_slice(br#""}"#);
    }))
    .await?;
    finish_stream(&tx, &w, usage).await
}

/// The usage chunk (if asked for) and `[DONE]`.
pub(super) async fn finish_stream(
    tx: &SseTx,
    w: &ChunkWriter,
    usage: Usage,
) -> Result<(), sse::Closed> {
    if w.include_usage {
        tx.send(w.usage(usage)).await?;
    }
    tx.send(Bytes::from_static(DONE)).await
}

/// Builds `data: {...}` chunks sharing id/object/created/model, straight into one buffer each.
pub(super) struct ChunkWriter {
    /// `data: {"id":..,"object":..,"created":..,"model":..,"system_fingerprint":null,"choices":[`
    prefix: Vec<u8>,
    include_usage: bool,
}

impl ChunkWriter {
    pub(super) fn new(
        id: &str,
        object: &str,
        created: u64,
        model: &str,
        include_usage: bool,
    ) -> Self {
        let mut prefix = Vec::with_capacity(128 + model.len());
        prefix.extend_from_slice(b"data: {\"id\":");
        push_json_str(&mut prefix, id);
        prefix.extend_from_slice(b",\"object\":");
        push_json_str(&mut prefix, object);
        prefix.extend_from_slice(format!(",\"created\":{created},\"model\":").as_bytes());
        push_json_str(&mut prefix, model);
        prefix.extend_from_slice(b",\"system_fingerprint\":null,\"choices\":[");
        ChunkWriter {
            prefix,
            include_usage,
        }
    }

    /// A chunk with one choice written by `choice`.
    pub(super) fn choice(&self, choice: impl FnOnce(&mut Vec<u8>)) -> Bytes {
        let mut b = Vec::with_capacity(self.prefix.len() + 128);
        b.extend_from_slice(&self.prefix);
        choice(&mut b);
        b.push(b']');
        if self.include_usage {
            b.extend_from_slice(b",\"usage\":null");
        }
        b.extend_from_slice(b"}\n\n");
        Bytes::from(b)
    }

    /// The final usage chunk: `"choices":[]` and `usage`.
    fn usage(&self, usage: Usage) -> Bytes {
        let mut b = Vec::with_capacity(self.prefix.len() + 96);
        b.extend_from_slice(&self.prefix);
        b.extend_from_slice(b"],\"usage\":");
        let _ = serde_json::to_writer(&mut b, &usage);
        b.extend_from_slice(b"}\n\n");
        Bytes::from(b)
    }
}

/// `GET /v1/models`.
pub(crate) fn models(state: &State) -> Response<MockBody> {
    let created = 1_700_000_000u64;
    let ids = [
        "gpt-4o",
        "gpt-4o-mini",
        "text-embedding-3-small",
        "mock-model",
    ];
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": state.cfg.name}))
        .collect();
    json_ok(&json!({"object": "list", "data": data}))
}
