//! Anthropic messages request → OpenAI chat request.

use serde_json::{Value, json};

use super::{assert_invalid, assert_unsupported};
use crate::translate::{chat_request_to_messages, messages_request_to_chat};

fn tr(req: Value) -> Value {
    messages_request_to_chat(&req, "gpt-x").expect("translates")
}

#[test]
fn basic_fields() {
    let out = tr(json!({
        "model": "claude",
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "top_p": 0.8,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-9"},
        "service_tier": "auto",
    }));
    assert_eq!(
        out,
        json!({
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "max_completion_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.8,
            "stop": ["END"],
            "user": "u-9",
        })
    );
}

#[test]
fn stream_requests_usage() {
    let out = tr(
        json!({"max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(out["stream"], true);
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    let out = tr(
        json!({"max_tokens": 5, "stream": false, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(out["stream"], false);
    assert_eq!(out.get("stream_options"), None);
}

#[test]
fn system_blocks_join_and_cache_control_is_dropped() {
    let out = tr(json!({
        "max_tokens": 5,
        "system": [
            {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Two."},
        ],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}},
        ]}],
    }));
    assert_eq!(
        out["messages"][0],
        json!({"role": "system", "content": "One.\n\nTwo."})
    );
    assert_eq!(out["messages"][1], json!({"role": "user", "content": "Hi"}));
}

#[test]
fn multi_turn_tools_and_results() {
    let out = tr(json!({
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "timeout"}]},
                {"type": "text", "text": "Summarize."},
            ]},
        ],
        "tools": [{"name": "weather", "description": "Get weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                   "cache_control": {"type": "ephemeral"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
    }));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"},
            {"role": "user", "content": "Summarize."},
        ])
    );
    assert_eq!(
        out["tools"],
        json!([{"type": "function", "function": {
            "name": "weather", "description": "Get weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }}])
    );
    assert_eq!(out["tool_choice"], "required");
    assert_eq!(out["parallel_tool_calls"], false);
}

#[test]
fn tool_only_assistant_has_null_content() {
    let out = tr(json!({"max_tokens": 5, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
    ]}));
    assert_eq!(out["messages"][1]["content"], Value::Null);
    assert_eq!(
        out["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
}

#[test]
fn tool_choice_variants() {
    let choice = |c: Value| {
        tr(
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                  "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": c}),
        )
    };
    assert_eq!(choice(json!({"type": "auto"}))["tool_choice"], "auto");
    assert_eq!(choice(json!({"type": "none"}))["tool_choice"], "none");
    assert_eq!(
        choice(json!({"type": "tool", "name": "f"}))["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(
        choice(json!({"type": "auto"})).get("parallel_tool_calls"),
        None
    );
}

#[test]
fn images_and_documents() {
    let out = tr(
        json!({"max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "document", "title": "report.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
            {"type": "text", "text": "Describe."},
        ]}]}),
    );
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
            {"type": "text", "text": "Describe."},
        ])
    );
}

#[test]
fn unsupported_fields_are_named() {
    let base = json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let cases = [
        ("top_k", json!(40), "top_k"),
        (
            "thinking",
            json!({"type": "enabled", "budget_tokens": 2000}),
            "thinking",
        ),
        (
            "stop_sequences",
            json!(["a", "b", "c", "d", "e"]),
            "stop_sequences",
        ),
        (
            "mcp_servers",
            json!([{"type": "url", "url": "https://x", "name": "x"}]),
            "mcp_servers",
        ),
        (
            "tools",
            json!([{"type": "web_search_20250305", "name": "web_search"}]),
            "tools[0].type",
        ),
    ];
    for (key, value, field) in cases {
        let mut req = base.clone();
        req[key] = value;
        assert_unsupported(messages_request_to_chat(&req, "m"), field);
    }
    let mut ok = base.clone();
    ok["thinking"] = json!({"type": "disabled"});
    ok["top_k"] = Value::Null;
    assert!(messages_request_to_chat(&ok, "m").is_ok());
}

#[test]
fn unsupported_blocks_are_named() {
    let req = |content: Value| json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": content}]});
    assert_unsupported(
        messages_request_to_chat(
            &req(
                json!([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]),
            ),
            "m",
        ),
        "messages[2].content[0].source.type",
    );
    assert_unsupported(
        messages_request_to_chat(
            &req(
                json!([{"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}},
                ]}]),
            ),
            "m",
        ),
        "messages[2].content[0].content[0].type",
    );
    assert_unsupported(
        messages_request_to_chat(&req(json!([{"type": "search_result", "source": "x"}])), "m"),
        "messages[2].content[0].type",
    );
    assert_unsupported(
        messages_request_to_chat(
            &req(json!([{"type": "image", "source": {"type": "file", "file_id": "f"}}])),
            "m",
        ),
        "messages[2].content[0].source.type",
    );
}

#[test]
fn invalid_shapes_are_named() {
    assert_invalid(
        messages_request_to_chat(&json!({"max_tokens": 5}), "m"),
        "messages",
    );
    assert_invalid(
        messages_request_to_chat(
            &json!({"messages": [{"role": "system", "content": "x"}]}),
            "m",
        ),
        "messages[0].role",
    );
    assert_invalid(
        messages_request_to_chat(&json!({"messages": [{"role": "user"}]}), "m"),
        "messages[0].content",
    );
    assert_invalid(
        messages_request_to_chat(
            &json!({"messages": [{"role": "user", "content": "x"}], "temperature": 1.5}),
            "m",
        ),
        "temperature",
    );
}

#[test]
fn round_trip_preserves_the_conversation() {
    let openai = json!({
        "messages": [
            {"role": "system", "content": "Sys"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "R"},
        ],
        "max_tokens": 9,
        "stop": ["X"],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
    });
    let anthropic = chat_request_to_messages(&openai, "claude", 100).unwrap();
    let back = messages_request_to_chat(&anthropic, "gpt").unwrap();
    assert_eq!(
        back["messages"],
        json!([
            {"role": "system", "content": "Sys"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "R"},
        ])
    );
    assert_eq!(back["max_completion_tokens"], 9);
    assert_eq!(back["stop"], json!(["X"]));
    assert_eq!(back["tool_choice"], "auto");
}
