//! Legacy completions: request, response and stream.

use bytes::Bytes;
use serde_json::{Value, json};

use super::stream_to_openai::{TEXT_STREAM, upstream_events};
use super::{assert_invalid, assert_unsupported, events, payloads};
use crate::translate::{
    MessagesToCompletionStream, Usage, completion_request_to_messages,
    messages_response_to_completion,
};

#[test]
fn request_with_string_or_single_element_prompt() {
    let out = completion_request_to_messages(
        &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon", "max_tokens": 20,
                "temperature": 0.7, "stop": "\n", "stream": true, "stream_options": {"include_usage": true}}),
        "claude-x",
        512,
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"model": "claude-x", "max_tokens": 20, "temperature": 0.7, "stop_sequences": ["\n"], "stream": true,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Once upon"}]}]})
    );
    let out = completion_request_to_messages(&json!({"prompt": ["Hi"]}), "c", 512).unwrap();
    assert_eq!(out["max_tokens"], 512);
    assert_eq!(out["messages"][0]["content"][0]["text"], "Hi");
}

#[test]
fn request_unsupported_and_invalid() {
    let r = |body: Value| completion_request_to_messages(&body, "c", 1);
    assert_unsupported(r(json!({"prompt": ["a", "b"]})), "prompt");
    assert_unsupported(r(json!({"prompt": [[1, 2, 3]]})), "prompt[0]");
    assert_unsupported(r(json!({"prompt": "a", "suffix": "z"})), "suffix");
    assert_unsupported(r(json!({"prompt": "a", "echo": true})), "echo");
    assert_unsupported(r(json!({"prompt": "a", "best_of": 3})), "best_of");
    assert_unsupported(r(json!({"prompt": "a", "logprobs": 2})), "logprobs");
    assert_unsupported(r(json!({"prompt": "a", "n": 2})), "n");
    assert_invalid(r(json!({"prompt": ""})), "prompt");
    assert_invalid(r(json!({"prompt": []})), "prompt");
    assert_invalid(r(json!({})), "prompt");
}

#[test]
fn response_to_text_completion() {
    let resp = json!({"id": "msg_C", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "text", "text": " there was"}], "stop_reason": "max_tokens",
        "usage": {"input_tokens": 4, "output_tokens": 3}});
    let out = messages_response_to_completion(&resp, "gpt-3.5-turbo-instruct").unwrap();
    assert_eq!(out["id"], "cmpl-C");
    assert_eq!(out["object"], "text_completion");
    assert_eq!(out["model"], "gpt-3.5-turbo-instruct");
    assert_eq!(
        out["choices"],
        json!([{"text": " there was", "index": 0, "logprobs": null, "finish_reason": "length"}])
    );
    assert_eq!(out["usage"]["total_tokens"], 7);
}

#[test]
fn stream_to_text_completion_chunks() {
    let mut s = MessagesToCompletionStream::new("inst", true);
    let mut frames: Vec<Bytes> = upstream_events(TEXT_STREAM)
        .iter()
        .flat_map(|e| s.push(e))
        .collect();
    frames.extend(s.finish());
    assert_eq!(events(&frames).last().unwrap().data, "[DONE]");
    let chunks = payloads(&frames);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "text_completion" && c["id"] == "cmpl-01X")
    );
    let texts: Vec<(Value, Value)> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| (c["text"].clone(), c["finish_reason"].clone()))
        .collect();
    assert_eq!(
        texts,
        vec![
            (json!("Hello"), Value::Null),
            (json!(" world"), Value::Null),
            (json!(""), json!("stop")),
        ]
    );
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 40);
    assert_eq!(
        s.usage(),
        Some(Usage {
            input_tokens: 25,
            output_tokens: 15
        })
    );
}
