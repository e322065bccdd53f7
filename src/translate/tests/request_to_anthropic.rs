//! OpenAI chat request → Anthropic messages request.

use serde_json::{Value, json};

use super::{assert_invalid, assert_unsupported};
use crate::translate::chat_request_to_messages;

fn tr(req: Value) -> Value {
    chat_request_to_messages(&req, "claude-x", 1024).expect("translates")
}

#[test]
fn basic_fields_and_default_max_tokens() {
    let out = tr(json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "u-1",
        "n": 1,
        "presence_penalty": 0,
        "logit_bias": {},
        "store": false,
    }));
    assert_eq!(
        out,
        json!({
            "model": "claude-x",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_tokens": 1024,
            "temperature": 0.5,
            "top_p": 0.9,
            "stream": true,
            "metadata": {"user_id": "u-1"},
        })
    );
}

#[test]
fn max_tokens_prefers_max_completion_tokens() {
    let msgs = json!([{"role": "user", "content": "Hi"}]);
    assert_eq!(
        tr(json!({"messages": msgs, "max_tokens": 50}))["max_tokens"],
        50
    );
    assert_eq!(
        tr(json!({"messages": msgs, "max_tokens": 50, "max_completion_tokens": 70}))["max_tokens"],
        70
    );
    assert_invalid(
        chat_request_to_messages(&json!({"messages": msgs, "max_tokens": 0}), "m", 10),
        "max_tokens",
    );
    assert_invalid(
        chat_request_to_messages(
            &json!({"messages": msgs, "max_completion_tokens": "x"}),
            "m",
            10,
        ),
        "max_completion_tokens",
    );
}

#[test]
fn system_and_developer_messages_join_into_system() {
    let out = tr(json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "user", "content": "Hi"},
    ]}));
    assert_eq!(out["system"], "Be brief.\n\nUse French.");
    assert_eq!(out["messages"].as_array().unwrap().len(), 1);
}

#[test]
fn late_system_message_is_unsupported() {
    let req = json!({"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "system", "content": "Now be rude."},
    ]});
    assert_unsupported(chat_request_to_messages(&req, "m", 10), "messages[2].role");
}

#[test]
fn multi_turn_merges_consecutive_same_roles() {
    let out = tr(json!({"messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": [{"type": "text", "text": "four"}]},
        {"role": "user", "content": "five"},
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}]},
            {"role": "user", "content": [{"type": "text", "text": "five"}]},
        ])
    );
}

#[test]
fn tools_tool_calls_and_tool_results() {
    let out = tr(json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "weather", "description": "Get weather", "strict": true,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }}, {"type": "function", "function": {"name": "noargs"}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
    }));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
                {"type": "text", "text": "Thanks"},
            ]},
        ])
    );
    assert_eq!(
        out["tools"],
        json!([
            {"name": "weather", "description": "Get weather",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "noargs", "input_schema": {"type": "object", "properties": {}}},
        ])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
}

#[test]
fn tool_choice_variants() {
    let base = |choice: Value| {
        tr(json!({
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": choice,
        }))["tool_choice"]
            .clone()
    };
    assert_eq!(base(json!("auto")), json!({"type": "auto"}));
    assert_eq!(base(json!("none")), json!({"type": "none"}));
    assert_eq!(base(json!("required")), json!({"type": "any"}));
    assert_eq!(
        base(json!({"type": "function", "function": {"name": "f"}})),
        json!({"type": "tool", "name": "f"})
    );
    assert_eq!(base(Value::Null), Value::Null);
    assert_unsupported(
        chat_request_to_messages(
            &json!({"messages": [{"role": "user", "content": "x"}],
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                    "tool_choice": {"type": "allowed_tools"}}),
            "m",
            1,
        ),
        "tool_choice.type",
    );
}

#[test]
fn assistant_text_and_tool_call_with_empty_arguments() {
    let out = tr(json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "now", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "c", "content": "noon"},
    ]}));
    assert_eq!(
        out["messages"][1]["content"],
        json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "c", "name": "now", "input": {}},
        ])
    );
}

#[test]
fn invalid_tool_arguments_are_invalid() {
    let req = json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}},
        ]},
    ]});
    assert_invalid(
        chat_request_to_messages(&req, "m", 1),
        "messages[1].tool_calls[0].function.arguments",
    );
    let req = json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}},
        ]},
    ]});
    assert_invalid(
        chat_request_to_messages(&req, "m", 1),
        "messages[1].tool_calls[0].function.arguments",
    );
}

#[test]
fn stop_string_or_array() {
    let msgs = json!([{"role": "user", "content": "x"}]);
    assert_eq!(
        tr(json!({"messages": msgs, "stop": "END"}))["stop_sequences"],
        json!(["END"])
    );
    assert_eq!(
        tr(json!({"messages": msgs, "stop": ["a", "b"]}))["stop_sequences"],
        json!(["a", "b"])
    );
    assert_eq!(
        tr(json!({"messages": msgs, "stop": null})).get("stop_sequences"),
        None
    );
    assert_invalid(
        chat_request_to_messages(&json!({"messages": msgs, "stop": ["a", 1]}), "m", 1),
        "stop[1]",
    );
}

#[test]
fn images_data_url_and_http_url() {
    let out = tr(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ])
    );
}

#[test]
fn bad_images_name_their_field() {
    let img = |url: &str| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "x"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}]})
    };
    assert_unsupported(
        chat_request_to_messages(&img("data:image/tiff;base64,AAAA"), "m", 1),
        "messages[0].content[1].image_url.url",
    );
    assert_invalid(
        chat_request_to_messages(&img("data:image/png,rawdata"), "m", 1),
        "messages[0].content[1].image_url.url",
    );
    assert_invalid(
        chat_request_to_messages(&img("ftp://x/y.png"), "m", 1),
        "messages[0].content[1].image_url.url",
    );
}

#[test]
fn pdf_file_part_becomes_document() {
    let out = tr(json!({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"][0],
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}})
    );
    let req = json!({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-123"}},
    ]}]});
    assert_unsupported(
        chat_request_to_messages(&req, "m", 1),
        "messages[0].content[0].file.file_id",
    );
}

#[test]
fn unsupported_top_level_fields_are_named() {
    let msgs = json!([{"role": "user", "content": "x"}]);
    let cases = [
        ("n", json!(2), "n"),
        ("logprobs", json!(true), "logprobs"),
        ("top_logprobs", json!(3), "top_logprobs"),
        ("presence_penalty", json!(0.5), "presence_penalty"),
        ("frequency_penalty", json!(-1), "frequency_penalty"),
        ("logit_bias", json!({"123": 5}), "logit_bias"),
        ("seed", json!(42), "seed"),
        ("audio", json!({"voice": "alloy", "format": "mp3"}), "audio"),
        ("modalities", json!(["text", "audio"]), "modalities"),
        ("temperature", json!(1.5), "temperature"),
        ("reasoning_effort", json!("high"), "reasoning_effort"),
        ("functions", json!([{"name": "f"}]), "functions"),
        (
            "prediction",
            json!({"type": "content", "content": "x"}),
            "prediction",
        ),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
            "response_format.type",
        ),
        (
            "response_format",
            json!({"type": "json_object"}),
            "response_format.type",
        ),
    ];
    for (key, value, field) in cases {
        let mut req = json!({"messages": msgs});
        req[key] = value;
        assert_unsupported(chat_request_to_messages(&req, "m", 1), field);
    }
    // Off values are accepted.
    let ok = json!({"messages": msgs, "n": null, "logprobs": false, "seed": null,
                    "frequency_penalty": 0.0, "response_format": {"type": "text"},
                    "modalities": ["text"], "temperature": 1.0});
    assert!(chat_request_to_messages(&ok, "m", 1).is_ok());
}

#[test]
fn unsupported_message_parts_are_named() {
    let audio = json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]}]});
    assert_unsupported(
        chat_request_to_messages(&audio, "m", 1),
        "messages[0].content[0].type",
    );
    let func = json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "function", "name": "f", "content": "y"},
    ]});
    assert_unsupported(chat_request_to_messages(&func, "m", 1), "messages[1].role");
    let tool = json!({"messages": [{"role": "user", "content": "x"}],
                      "tools": [{"type": "custom", "custom": {"name": "g"}}]});
    assert_unsupported(chat_request_to_messages(&tool, "m", 1), "tools[0].type");
}

#[test]
fn invalid_shapes_are_named() {
    assert_invalid(chat_request_to_messages(&json!({}), "m", 1), "messages");
    assert_invalid(
        chat_request_to_messages(
            &json!({"messages": [{"role": "system", "content": "x"}]}),
            "m",
            1,
        ),
        "messages",
    );
    assert_invalid(
        chat_request_to_messages(
            &json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "m",
            1,
        ),
        "messages[0].role",
    );
    assert_invalid(
        chat_request_to_messages(
            &json!({"messages": [{"role": "tool", "content": "x"}]}),
            "m",
            1,
        ),
        "messages[0].tool_call_id",
    );
    assert_invalid(
        chat_request_to_messages(
            &json!({"messages": [{"role": "user", "content": "x"}], "temperature": -1}),
            "m",
            1,
        ),
        "temperature",
    );
    assert_invalid(
        chat_request_to_messages(
            &json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
            "m",
            1,
        ),
        "tool_choice",
    );
}

#[test]
fn safety_identifier_maps_to_user_id() {
    let out =
        tr(json!({"messages": [{"role": "user", "content": "x"}], "safety_identifier": "s-1"}));
    assert_eq!(out["metadata"], json!({"user_id": "s-1"}));
}
