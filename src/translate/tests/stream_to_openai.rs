//! Anthropic upstream events → OpenAI chat chunks (MessagesToChatStream).

use bytes::Bytes;
use serde_json::{Value, json};

use super::{ev, events, payloads};
use crate::translate::{MessagesToChatStream, SseEvent, SseParser, Usage};

/// A realistic Anthropic text stream, as raw bytes.
pub(super) const TEXT_STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01X\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

pub(super) fn upstream_events(raw: &str) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    // Feed in awkward 7-byte pieces to exercise split events.
    raw.as_bytes()
        .chunks(7)
        .flat_map(|c| parser.push(c))
        .collect()
}

fn run(stream: &mut MessagesToChatStream, evs: &[SseEvent]) -> Vec<Bytes> {
    let mut frames: Vec<Bytes> = evs.iter().flat_map(|e| stream.push(e)).collect();
    frames.extend(stream.finish());
    frames
}

#[test]
fn text_stream_with_usage() {
    let mut s = MessagesToChatStream::new("my-model", true);
    let frames = run(&mut s, &upstream_events(TEXT_STREAM));
    let evs = events(&frames);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    assert!(evs.iter().all(|e| e.event.is_none()));
    let chunks = payloads(&frames);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-01X");
        assert_eq!(c["model"], "my-model");
    }
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"].get(0)).collect();
    assert_eq!(
        deltas[0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(deltas[1]["delta"], json!({"content": "Hello"}));
    assert_eq!(deltas[2]["delta"], json!({"content": " world"}));
    assert_eq!(deltas[3]["delta"], json!({}));
    assert_eq!(deltas[3]["finish_reason"], "stop");
    assert_eq!(deltas.len(), 4);
    // Every chunk but the last has usage: null; the last has choices [] and the totals.
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["usage"], Value::Null);
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 25);
    assert_eq!(last["usage"]["completion_tokens"], 15);
    assert_eq!(last["usage"]["total_tokens"], 40);
    assert_eq!(
        s.usage(),
        Some(Usage {
            input_tokens: 25,
            output_tokens: 15
        })
    );
}

#[test]
fn without_include_usage_there_is_no_usage_chunk() {
    let mut s = MessagesToChatStream::new("m", false);
    let frames = run(&mut s, &upstream_events(TEXT_STREAM));
    let chunks = payloads(&frames);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty())
    );
    assert_eq!(events(&frames).last().unwrap().data, "[DONE]");
    // Usage is still tracked for the gateway.
    assert_eq!(
        s.usage(),
        Some(Usage {
            input_tokens: 25,
            output_tokens: 15
        })
    );
}

#[test]
fn tool_use_stream() {
    let evs = [
        ev(
            Some("message_start"),
            json!({"type": "message_start", "message": {
            "id": "msg_T", "type": "message", "role": "assistant", "content": [], "model": "c",
            "usage": {"input_tokens": 50, "output_tokens": 1}}}),
        ),
        ev(
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ev(
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Checking."}}),
        ),
        ev(
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_A", "name": "weather", "input": {}}}),
        ),
        ev(
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        ev(
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        ),
        ev(
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        ),
        ev(
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 1}),
        ),
        ev(
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_B", "name": "time", "input": {}}}),
        ),
        ev(
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ),
        ev(
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 2}),
        ),
        ev(
            Some("message_delta"),
            json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}),
        ),
        ev(Some("message_stop"), json!({"type": "message_stop"})),
    ];
    let mut s = MessagesToChatStream::new("m", false);
    let frames = run(&mut s, &evs);
    let deltas: Vec<Value> = payloads(&frames)
        .iter()
        .map(|c| c["choices"][0].clone())
        .collect();
    assert_eq!(deltas[1]["delta"], json!({"content": "Checking."}));
    assert_eq!(
        deltas[2]["delta"],
        json!({"tool_calls": [{"index": 0, "id": "toolu_A", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]})
    );
    assert_eq!(
        deltas[3]["delta"],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]})
    );
    assert_eq!(
        deltas[4]["delta"],
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})
    );
    assert_eq!(deltas[5]["delta"]["tool_calls"][0]["index"], 1);
    assert_eq!(deltas[5]["delta"]["tool_calls"][0]["id"], "toolu_B");
    assert_eq!(
        deltas[6]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    assert_eq!(deltas[7]["finish_reason"], "tool_calls");
    assert_eq!(deltas.len(), 8);
    assert_eq!(
        s.usage(),
        Some(Usage {
            input_tokens: 50,
            output_tokens: 30
        })
    );
}

#[test]
fn upstream_error_event_becomes_openai_error_frame() {
    let mut s = MessagesToChatStream::new("m", true);
    let mut frames = s.push(&ev(
        Some("message_start"),
        json!({"type": "message_start",
        "message": {"id": "msg_E", "usage": {"input_tokens": 1, "output_tokens": 0}}}),
    ));
    frames.extend(s.push(&ev(
        Some("error"),
        json!({"type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )));
    frames.extend(s.push(&ev(Some("message_stop"), json!({"type": "message_stop"}))));
    frames.extend(s.finish());
    let evs = events(&frames);
    assert!(evs.iter().all(|e| e.data != "[DONE]"));
    let last: Value = serde_json::from_str(&evs.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["message"], "Overloaded");
    assert_eq!(last["error"]["type"], "server_error");
}

#[test]
fn truncated_upstream_ends_with_error_frame() {
    let mut s = MessagesToChatStream::new("m", false);
    let all = upstream_events(TEXT_STREAM);
    let frames = run(&mut s, &all[..3]);
    let last: Value = serde_json::from_str(&events(&frames).last().unwrap().data).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("ended"));
}

#[test]
fn missing_message_stop_still_completes_after_message_delta() {
    let mut s = MessagesToChatStream::new("m", false);
    let all = upstream_events(TEXT_STREAM);
    let frames = run(&mut s, &all[..all.len() - 1]);
    assert_eq!(events(&frames).last().unwrap().data, "[DONE]");
    assert!(s.finish().is_empty());
}

#[test]
fn garbage_and_pings_are_ignored() {
    let mut s = MessagesToChatStream::new("m", false);
    assert!(
        s.push(&SseEvent {
            event: Some("ping".into()),
            data: "{\"type\":\"ping\"}".into()
        })
        .is_empty()
    );
    assert!(
        s.push(&SseEvent {
            event: None,
            data: "not json".into()
        })
        .is_empty()
    );
    assert_eq!(s.usage(), None);
}
