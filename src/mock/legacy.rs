//! OpenAI legacy text completions (`POST /v1/completions`), whole and streamed.

use std::sync::Arc;

use http::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{MockBody, json_ok};
use super::control::Snapshot;
use super::openai::{ChunkWriter, Usage, finish_stream};
use super::request::{Stop, StreamOptions, parse, tokens_for_chars, truncate_chars};
use super::sse::{self, push_json_str};
use super::state::{InFlight, State, unix_now};
use super::text::{ECHO_MAX_CHARS, Finish, answer};
use crate::protocol::Protocol;

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
        return sse::stream(snap, guard, move |mut tx| async move {
            for word in a.chunks() {
                tx.token(w.choice(|b| text_choice(b, word, None))).await?;
            }
            tx.send(w.choice(|b| text_choice(b, "", Some(&a.finish))))
                .await?;
            finish_stream(&tx, &w, usage).await
        });
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
pub(super) fn prompt_facts(prompt: &Value) -> (u32, &str) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_prompt_tokens() {
        assert_eq!(prompt_facts(&json!("abcdefgh")), (2, "abcdefgh"));
        assert_eq!(prompt_facts(&json!(["abc", "defgh"])), (2, "defgh"));
        assert_eq!(prompt_facts(&json!([1, 2, 3])), (3, ""));
        assert_eq!(prompt_facts(&Value::Null), (1, ""));
    }
}
