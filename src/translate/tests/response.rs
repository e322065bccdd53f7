//! Non-streaming responses both ways.

use serde_json::{Value, json};

use super::assert_invalid;
use crate::translate::{chat_response_to_messages, messages_response_to_chat};

fn anthropic_text() -> Value {
    json!({
        "id": "msg_01ABC",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet",
        "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5,
                  "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2},
    })
}

#[test]
fn anthropic_text_to_chat() {
    let out = messages_response_to_chat(&anthropic_text(), "my-model").unwrap();
    assert_eq!(out["id"], "chatcmpl-01ABC");
    assert_eq!(out["object"], "chat.completion");
    assert!(out["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(out["model"], "my-model");
    assert_eq!(
        out["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }])
    );
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 16, "completion_tokens": 5, "total_tokens": 21,
               "prompt_tokens_details": {"cached_tokens": 4}})
    );
}

#[test]
fn anthropic_tool_use_to_chat() {
    let resp = json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "c",
        "content": [
            {"type": "thinking", "thinking": "...", "signature": "s"},
            {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 7},
    });
    let out = messages_response_to_chat(&resp, "m").unwrap();
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "toolu_9", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}])
    );
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        let mut resp = anthropic_text();
        resp["stop_reason"] = json!(stop);
        let out = messages_response_to_chat(&resp, "m").unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
    }
}

#[test]
fn chat_text_to_anthropic() {
    let resp = json!({
        "id": "chatcmpl-XYZ",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!", "refusal": null},
                     "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23,
                  "prompt_tokens_details": {"cached_tokens": 8}},
    });
    let out = chat_response_to_messages(&resp, "claude-alias").unwrap();
    assert_eq!(
        out,
        json!({
            "id": "msg_XYZ",
            "type": "message",
            "role": "assistant",
            "model": "claude-alias",
            "content": [{"type": "text", "text": "Hi!"}],
            "stop_reason": "max_tokens",
            "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 3,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8},
        })
    );
}

#[test]
fn chat_tool_calls_to_anthropic() {
    let resp = json!({
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Sure.",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": ""}},
            ],
        }}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    });
    let out = chat_response_to_messages(&resp, "m").unwrap();
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["content"],
        json!([
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": "call_b", "name": "g", "input": {}},
        ])
    );
}

#[test]
fn chat_refusal_to_anthropic() {
    let resp = json!({"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
    let out = chat_response_to_messages(&resp, "m").unwrap();
    assert_eq!(out["stop_reason"], "refusal");
    assert_eq!(
        out["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    assert_eq!(out["usage"]["input_tokens"], 0);
}

#[test]
fn bad_responses_are_invalid() {
    let resp = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": null,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
    }}]});
    assert_invalid(
        chat_response_to_messages(&resp, "m"),
        "choices[0].message.tool_calls[0].function.arguments",
    );
    assert_invalid(
        chat_response_to_messages(&json!({"choices": []}), "m"),
        "choices",
    );
    assert_invalid(
        messages_response_to_chat(
            &json!({"type": "error", "error": {"type": "api_error", "message": "x"}}),
            "m",
        ),
        "type",
    );
    assert_invalid(
        messages_response_to_chat(&json!({"id": "msg_1"}), "m"),
        "content",
    );
}

#[test]
fn round_trip_keeps_content_and_usage() {
    let back = chat_response_to_messages(
        &messages_response_to_chat(&anthropic_text(), "m").unwrap(),
        "claude",
    )
    .unwrap();
    assert_eq!(back["id"], "msg_01ABC");
    assert_eq!(
        back["content"],
        json!([{"type": "text", "text": "Hello there"}])
    );
    assert_eq!(back["stop_reason"], "end_turn");
    // Cache creation is not expressible in OpenAI usage: it folds into uncached input.
    assert_eq!(back["usage"]["input_tokens"], 12);
    assert_eq!(back["usage"]["cache_read_input_tokens"], 4);
    assert_eq!(back["usage"]["output_tokens"], 5);
}
