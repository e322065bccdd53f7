//! Responses ↔ Chat Completions, from the public API references: requests, whole responses, streams.

use serde_json::json;

use super::{assert_invalid, assert_unsupported, ev, payloads};
use crate::translate::{
    ChatToResponsesStream, MessagesToResponsesStream, StreamCheck, StreamFault, Usage, Wire,
    chat_request_to_messages, chat_response_to_responses, responses_native_field,
    responses_request_to_chat,
};

#[test]
fn a_request_becomes_chat_messages_tools_and_settings() {
    let req = json!({
        "model": "gpt-x", "instructions": "be brief",
        "input": [
            {"role": "developer", "content": "plain words"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "one"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "two"}]},
        ],
        "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "f"},
        "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stream": true,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        "metadata": {"k": "v"}, "store": true, "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"], "truncation": "disabled",
    });
    let chat = responses_request_to_chat(&req, "up-model").unwrap();
    assert_eq!(
        chat,
        json!({
            "model": "up-model",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "system", "content": "plain words"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "one"},
                {"role": "tool", "tool_call_id": "call_2", "content": "two"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "max_completion_tokens": 50, "temperature": 0.2, "top_p": 0.9,
            "stream": true, "stream_options": {"include_usage": true},
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
            "reasoning_effort": "low",
        })
    );
    // A string input is one user message.
    let chat = responses_request_to_chat(&json!({"input": "hi"}), "m").unwrap();
    assert_eq!(chat["messages"], json!([{"role": "user", "content": "hi"}]));
}

#[test]
fn what_needs_a_responses_backend_is_named() {
    for (body, field) in [
        (
            json!({"input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"input": "x", "background": true}), "background"),
        (
            json!({"input": "x", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}),
            "tools[1].type",
        ),
        (
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0].type",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"input": "x", "tool_choice": {"type": "web_search"}}),
            "tool_choice.type",
        ),
    ] {
        assert_unsupported(responses_request_to_chat(&body, "m"), field);
    }
    assert_eq!(
        responses_native_field(&json!({"input": "x", "tools": [{"type": "file_search"}]}))
            .as_deref(),
        Some("tools[0].type")
    );
    assert_eq!(
        responses_native_field(&json!({"input": "x", "background": false})),
        None
    );
    assert_invalid(
        responses_request_to_chat(&json!({"input": 3}), "m"),
        "input",
    );
    assert_invalid(
        responses_request_to_chat(
            &json!({"input": [{"type": "function_call_output", "output": "x"}]}),
            "m",
        ),
        "input[0].call_id",
    );
    // Through chat to Anthropic, a field is named as the Responses client wrote it.
    let chat = responses_request_to_chat(
        &json!({"input": "x", "text": {"format": {"type": "json_object"}}}),
        "m",
    )
    .unwrap();
    let e = chat_request_to_messages(&chat, "m", 100)
        .unwrap_err()
        .as_responses();
    assert_eq!(e.field(), "text.format.type");
}

#[test]
fn a_chat_completion_becomes_a_response_object() {
    let chat = json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000, "model": "gpt-x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "let me look",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "prompt_tokens_details": {"cached_tokens": 4}},
    });
    let req = json!({"model": "mine", "input": "x", "metadata": {"k": "v"}, "instructions": "i"});
    let r = chat_response_to_responses(&chat, &req, "mine").unwrap();
    assert_eq!(r["id"], "resp_abc");
    assert_eq!(r["object"], "response");
    assert_eq!(r["created_at"], 1700000000);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "mine");
    assert_eq!(r["metadata"], json!({"k": "v"}));
    assert_eq!(r["instructions"], "i");
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(
        r["output"][0]["content"][0],
        json!({"type": "output_text", "text": "let me look", "annotations": [], "logprobs": []})
    );
    assert_eq!(r["output"][1]["type"], "function_call");
    assert_eq!(r["output"][1]["call_id"], "call_9");
    assert_eq!(r["output"][1]["arguments"], "{\"q\":1}");
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 17})
    );
    let mut cut = chat.clone();
    cut["choices"][0]["finish_reason"] = json!("length");
    let r = chat_response_to_responses(&cut, &req, "mine").unwrap();
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
}

#[test]
fn a_chat_stream_becomes_the_typed_event_sequence() {
    let mut t = ChatToResponsesStream::new(&json!({"input": "x", "metadata": {"k": "v"}}), "mine");
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        ev(
            None,
            json!({"id": "chatcmpl-s1", "created": 5, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut frames = Vec::new();
    for e in [
        chunk(json!({"role": "assistant", "content": ""}), json!(null)),
        chunk(json!({"content": "Hi"}), json!(null)),
        chunk(json!({"content": " there"}), json!(null)),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            json!(null),
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}),
            json!(null),
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            json!(null),
        ),
        chunk(json!({}), json!("tool_calls")),
        ev(
            None,
            json!({"id": "chatcmpl-s1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}}),
        ),
        ev(None, json!("[DONE]")),
    ] {
        frames.extend(t.push(&e));
    }
    frames.extend(t.finish());
    let events = payloads(&frames);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64);
    }
    assert_eq!(events[0]["response"]["status"], "in_progress");
    assert_eq!(events[6]["text"], "Hi there");
    assert_eq!(events[9]["output_index"], 1);
    assert_eq!(events[12]["arguments"], "{\"a\":1}");
    let done = &events[14]["response"];
    assert_eq!(done["id"], "resp_s1");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["metadata"], json!({"k": "v"}));
    assert_eq!(done["output"][1]["call_id"], "call_1");
    assert_eq!(done["usage"]["output_tokens"], 7);
    assert_eq!(
        t.usage(),
        Some(Usage {
            input_tokens: 3,
            output_tokens: 7
        })
    );
    // An upstream error chunk becomes an error event.
    let mut t = ChatToResponsesStream::new(&json!({}), "m");
    let out = payloads(&t.push(&ev(
        None,
        json!({"error": {"message": "boom", "type": "server_error"}}),
    )));
    assert_eq!(out[0]["type"], "error");
    assert_eq!(out[0]["message"], "boom");
}

#[test]
fn an_anthropic_stream_becomes_responses_events_with_its_usage() {
    let mut t = MessagesToResponsesStream::new(&json!({}), "claude");
    let mut frames = Vec::new();
    for (e, d) in [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_a", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "yo"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 4}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ] {
        frames.extend(t.push(&ev(Some(e), d)));
    }
    frames.extend(t.finish());
    let events = payloads(&frames);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "yo");
    assert_eq!(last["response"]["usage"]["input_tokens"], 9);
    assert_eq!(
        t.usage(),
        Some(Usage {
            input_tokens: 9,
            output_tokens: 4
        })
    );
}

#[test]
fn a_responses_stream_is_complete_only_with_its_final_event() {
    let mut c = StreamCheck::of(Wire::Responses);
    c.observe(&ev(
        Some("response.created"),
        json!({"type": "response.created", "response": {"usage": null}}),
    ))
    .unwrap();
    c.observe(&ev(
        Some("response.output_text.delta"),
        json!({"type": "response.output_text.delta", "delta": "x"}),
    ))
    .unwrap();
    assert!(!c.complete(), "cut before response.completed");
    c.observe(&ev(
        Some("response.completed"),
        json!({"type": "response.completed",
        "response": {"usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}}),
    ))
    .unwrap();
    assert!(c.complete());
    let usage = c.usage().map(|u| (u.input_tokens, u.output_tokens));
    assert_eq!(usage, Some((5, 2)), "read from the final event");
    for last in ["response.incomplete", "response.failed"] {
        let mut c = StreamCheck::of(Wire::Responses);
        c.observe(&ev(Some(last), json!({"type": last, "response": {}})))
            .unwrap();
        assert!(c.complete(), "{last}");
    }
    let mut c = StreamCheck::of(Wire::Responses);
    c.observe(&ev(Some("error"), json!({"type": "error", "message": "x"})))
        .unwrap();
    assert!(c.errored());
    assert_eq!(
        StreamCheck::of(Wire::Responses).observe(&ev(None, json!("[DONE]"))),
        Err(StreamFault::Malformed)
    );
}
