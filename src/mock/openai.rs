//! OpenAI endpoints: chat completions, legacy completions, embeddings, models.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::{MockBody, error, json_ok};
use super::control::Snapshot;
use super::request::{ChatRequest, Stop, StreamOptions, parse, tokens_for_chars, truncate_chars};
use super::sse::{self, DONE, SseTx, push_json_str};
use super::state::{InFlight, State, unix_now};
use super::text::{ECHO_MAX_CHARS, Finish, Reply, answer};
use crate::protocol::Protocol;

/// Chars per streamed tool-argument fragment.
const ARGUMENT_FRAGMENT_CHARS: usize = 8;

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl Usage {
    fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
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
        return sse::stream(snap.tokens_per_sec, snap.ttft, guard, move |tx| {
            stream_chat(tx, chunks, reply, usage)
        });
    }
    if !snap.ttft.is_zero() {
        tokio::time::sleep(snap.ttft).await;
    }
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
async fn finish_stream(tx: &SseTx, w: &ChunkWriter, usage: Usage) -> Result<(), sse::Closed> {
    if w.include_usage {
        tx.send(w.usage(usage)).await?;
    }
    tx.send(Bytes::from_static(DONE)).await
}

/// Builds `data: {...}` chunks sharing id/object/created/model, straight into one buffer each.
struct ChunkWriter {
    /// `data: {"id":..,"object":..,"created":..,"model":..,"system_fingerprint":null,"choices":[`
    prefix: Vec<u8>,
    include_usage: bool,
}

impl ChunkWriter {
    fn new(id: &str, object: &str, created: u64, model: &str, include_usage: bool) -> Self {
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
    fn choice(&self, choice: impl FnOnce(&mut Vec<u8>)) -> Bytes {
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

/// Legacy text completion request.
#[derive(Deserialize)]
struct CompletionRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt: Value,
    stream: Option<bool>,
    max_tokens: Option<u32>,
    stop: Option<Stop>,
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [TextChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    state: &Arc<State>,
    snap: &Snapshot,
    body: &[u8],
    guard: InFlight,
) -> Response<MockBody> {
    let req: CompletionRequest = match parse(body) {
        Ok(r) => r,
        Err(bad) => return bad.into_response(Protocol::Openai),
    };
    let (prompt_tokens, last) = prompt_facts(&req.prompt);
    let stops: &[String] = match &req.stop {
        Some(Stop::One(s)) => std::slice::from_ref(s),
        Some(Stop::Many(v)) => v,
        None => &[],
    };
    let a = answer(
        &state.cfg.name,
        truncate_chars(last, ECHO_MAX_CHARS),
        state.cfg.output_tokens,
        req.max_tokens,
        stops,
    );
    let id = format!("cmpl-{}", state.next_id());
    let created = unix_now();
    let usage = Usage::new(prompt_tokens, a.tokens());
    if req.stream.unwrap_or(false) {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        let w = ChunkWriter::new(&id, "text_completion", created, &req.model, include_usage);
        return sse::stream(
            snap.tokens_per_sec,
            snap.ttft,
            guard,
            move |mut tx| async move {
                for word in a.chunks() {
                    tx.token(w.choice(|b| text_choice(b, word, None))).await?;
                }
                tx.send(w.choice(|b| text_choice(b, "", Some(&a.finish))))
                    .await?;
                finish_stream(&tx, &w, usage).await
            },
        );
    }
    if !snap.ttft.is_zero() {
        tokio::time::sleep(snap.ttft).await;
    }
    json_ok(&TextCompletion {
        id: &id,
        object: "text_completion",
        created,
        model: &req.model,
        choices: [TextChoice {
            text: &a.text,
            index: 0,
            logprobs: None,
            finish_reason: a.finish.openai(),
        }],
        usage,
    })
}

fn text_choice(b: &mut Vec<u8>, text: &str, finish: Option<&Finish>) {
    b.extend_from_slice(b"{\"text\":");
    push_json_str(b, text);
    b.extend_from_slice(b",\"index\":0,\"logprobs\":null,\"finish_reason\":");
    match finish {
        Some(f) => push_json_str(b, f.openai()),
        None => b.extend_from_slice(b"null"),
    }
    b.push(b'}');
}

/// Prompt tokens of a legacy prompt (string, strings, or token arrays) and its last text.
fn prompt_facts(prompt: &Value) -> (u32, &str) {
    fn walk<'a>(v: &'a Value, chars: &mut usize, tokens: &mut usize, last: &mut &'a str) {
        match v {
            Value::String(s) => {
                *chars += s.chars().count();
                *last = s;
            }
            Value::Number(_) => *tokens += 1,
            Value::Array(items) => items.iter().for_each(|i| walk(i, chars, tokens, last)),
            _ => {}
        }
    }
    let (mut chars, mut tokens, mut last) = (0, 0, "");
    walk(prompt, &mut chars, &mut tokens, &mut last);
    let text_tokens = if chars > 0 {
        tokens_for_chars(chars)
    } else {
        0
    };
    let id_tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
    (text_tokens.saturating_add(id_tokens).max(1), last)
}

/// Embeddings request.
#[derive(Deserialize)]
struct EmbeddingRequest {
    #[serde(default)]
    model: String,
    input: Option<Value>,
    dimensions: Option<u32>,
    encoding_format: Option<String>,
}

/// Default embedding size.
const EMBEDDING_DIMS: usize = 16;

/// `POST /v1/embeddings`: deterministic vectors (a hash of each input seeds them).
pub(crate) async fn embeddings(snap: &Snapshot, body: &[u8]) -> Response<MockBody> {
    let req: EmbeddingRequest = match parse(body) {
        Ok(r) => r,
        Err(bad) => return bad.into_response(Protocol::Openai),
    };
    let inputs: Vec<&Value> = match &req.input {
        Some(Value::Array(items)) if items.first().is_some_and(|v| !v.is_number()) => {
            items.iter().collect()
        }
        Some(v @ (Value::String(_) | Value::Array(_))) => vec![v],
        _ => {
            let msg = "'input' must be a string, an array of strings, or token arrays.";
            return error(Protocol::Openai, StatusCode::BAD_REQUEST, msg);
        }
    };
    let dims = req
        .dimensions
        .map_or(EMBEDDING_DIMS, |d| (d as usize).clamp(1, 4096));
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let mut prompt_tokens = 0u32;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let (tokens, _) = prompt_facts(input);
            prompt_tokens = prompt_tokens.saturating_add(tokens);
            let vector = embedding(&input.to_string(), dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    if !snap.ttft.is_zero() {
        tokio::time::sleep(snap.ttft).await;
    }
    json_ok(&json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
}

/// A unit-length vector derived from `seed_text` (FNV-1a seeded splitmix64).
fn embedding(seed_text: &str, dims: usize) -> Vec<f32> {
    let mut x = seed_text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = v.iter().map(|f| f * f).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|f| *f /= norm);
    }
    v
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_reference() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("\"hello\"", 16);
        assert_eq!(a, embedding("\"hello\"", 16));
        assert_ne!(a, embedding("\"world\"", 16));
        let norm: f32 = a.iter().map(|f| f * f).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn legacy_prompt_tokens() {
        assert_eq!(prompt_facts(&json!("abcdefgh")), (2, "abcdefgh"));
        assert_eq!(prompt_facts(&json!(["abc", "defgh"])), (2, "defgh"));
        assert_eq!(prompt_facts(&json!([1, 2, 3])), (3, ""));
        assert_eq!(prompt_facts(&Value::Null), (1, ""));
    }
}
