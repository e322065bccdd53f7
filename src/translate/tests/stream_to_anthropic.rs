//! OpenAI upstream chunks → Anthropic events (ChatToMessagesStream).

use bytes::Bytes;
use serde_json::{Value, json};

use super::{events, payloads};
use crate::translate::{ChatToMessagesStream, SseEvent, SseParser, Usage};

fn chunk(delta: Value, finish: Value) -> String {
    json!({"id": "chatcmpl-A", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
           "usage": null})
    .to_string()
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    json!({"id": "chatcmpl-A", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
           "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                    "total_tokens": prompt + completion}})
    .to_string()
}

/// Raw upstream bytes with CRLF line ends, fed through the parser in small pieces.
fn upstream(datas: &[String]) -> Vec<SseEvent> {
    let raw: String = datas.iter().map(|d| format!("data: {d}\r\n\r\n")).collect();
    let mut parser = SseParser::default();
    raw.as_bytes()
        .chunks(5)
        .flat_map(|c| parser.push(c))
        .collect()
}

fn run(s: &mut ChatToMessagesStream, evs: &[SseEvent]) -> Vec<Bytes> {
    let mut frames: Vec<Bytes> = evs.iter().flat_map(|e| s.push(e)).collect();
    frames.extend(s.finish());
    frames
}

/// Each event's name must match its payload's `type`.
fn typed(frames: &[Bytes]) -> Vec<Value> {
    let evs = events(frames);
    let datas = payloads(frames);
    for (e, d) in evs.iter().zip(&datas) {
        assert_eq!(e.event.as_deref(), d["type"].as_str());
    }
    datas
}

#[test]
fn text_stream_with_usage() {
    let evs = upstream(&[
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " world"}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage_chunk(9, 2),
        "[DONE]".to_string(),
    ]);
    let mut s = ChatToMessagesStream::new("claude-alias");
    let out = typed(&run(&mut s, &evs));
    let kinds: Vec<&str> = out.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &out[0]["message"];
    assert_eq!(start["id"], "msg_A");
    assert_eq!(start["model"], "claude-alias");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["content"], json!([]));
    assert_eq!(out[1]["content_block"], json!({"type": "text", "text": ""}));
    assert_eq!(
        out[2]["delta"],
        json!({"type": "text_delta", "text": "Hello"})
    );
    assert_eq!(out[3]["index"], 0);
    assert_eq!(
        out[5]["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(out[5]["usage"]["input_tokens"], 9);
    assert_eq!(out[5]["usage"]["output_tokens"], 2);
    assert_eq!(
        s.usage(),
        Some(Usage {
            input_tokens: 9,
            output_tokens: 2
        })
    );
}

#[test]
fn tool_call_stream() {
    let evs = upstream(&[
        chunk(
            json!({"role": "assistant", "content": "Let me look."}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "weather", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Paris\"}"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                   "function": {"name": "time", "arguments": "{}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        usage_chunk(40, 12),
        "[DONE]".to_string(),
    ]);
    let mut s = ChatToMessagesStream::new("c");
    let out = typed(&run(&mut s, &evs));
    let summary: Vec<(String, Value)> = out
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["index"].clone()))
        .collect();
    let expect = [
        ("message_start", Value::Null),
        ("content_block_start", json!(0)),
        ("content_block_delta", json!(0)),
        ("content_block_stop", json!(0)),
        ("content_block_start", json!(1)),
        ("content_block_delta", json!(1)),
        ("content_block_delta", json!(1)),
        ("content_block_stop", json!(1)),
        ("content_block_start", json!(2)),
        ("content_block_delta", json!(2)),
        ("content_block_stop", json!(2)),
        ("message_delta", Value::Null),
        ("message_stop", Value::Null),
    ];
    let expect: Vec<(String, Value)> = expect
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(summary, expect);
    assert_eq!(
        out[4]["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {}})
    );
    assert_eq!(
        out[5]["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"ci"})
    );
    assert_eq!(out[6]["delta"]["partial_json"], "ty\":\"Paris\"}");
    assert_eq!(out[8]["content_block"]["id"], "call_2");
    assert_eq!(out[9]["delta"]["partial_json"], "{}");
    assert_eq!(out[11]["delta"]["stop_reason"], "tool_use");
    assert_eq!(out[11]["usage"]["output_tokens"], 12);
}

#[test]
fn missing_done_after_finish_reason_still_completes() {
    let evs = upstream(&[
        chunk(json!({"content": "Hi"}), Value::Null),
        chunk(json!({}), json!("length")),
    ]);
    let mut s = ChatToMessagesStream::new("c");
    let out = typed(&run(&mut s, &evs));
    assert_eq!(out[out.len() - 2]["delta"]["stop_reason"], "max_tokens");
    assert_eq!(out.last().unwrap()["type"], "message_stop");
    assert!(s.finish().is_empty());
    assert_eq!(s.usage(), None);
}

#[test]
fn truncated_upstream_ends_with_error_event() {
    let evs = upstream(&[chunk(json!({"content": "Hi"}), Value::Null)]);
    let mut s = ChatToMessagesStream::new("c");
    let out = typed(&run(&mut s, &evs));
    let last = out.last().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"]["type"], "api_error");
}

#[test]
fn upstream_error_chunk_becomes_error_event() {
    let evs = upstream(&[
        chunk(json!({"content": "Hi"}), Value::Null),
        json!({"error": {"message": "boom", "type": "server_error"}}).to_string(),
        "[DONE]".to_string(),
    ]);
    let mut s = ChatToMessagesStream::new("c");
    let out = typed(&run(&mut s, &evs));
    let last = out.last().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"]["message"], "boom");
    assert!(out.iter().all(|e| e["type"] != "message_stop"));
}

#[test]
fn empty_completion_still_yields_a_full_message() {
    let evs = upstream(&[chunk(json!({}), json!("stop")), "[DONE]".to_string()]);
    let mut s = ChatToMessagesStream::new("c");
    let out = typed(&run(&mut s, &evs));
    let kinds: Vec<&str> = out.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message_start", "message_delta", "message_stop"]);
}
