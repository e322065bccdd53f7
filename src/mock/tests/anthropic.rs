//! Anthropic protocol tests: messages (whole, streamed, tools), auth, models.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{sse_events, start, start_default, tokens};
use crate::mock::MockConfig;
use crate::protocol::Protocol;

fn messages(extra: Value) -> Value {
    let mut body = json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn tools() -> Value {
    json!([{"name": "get_weather", "input_schema": {"type": "object"}}])
}

#[tokio::test]
async fn message_non_stream() {
    let mock = start_default(Protocol::Anthropic).await;
    let res = mock
        .post("/v1/messages", &messages(json!({"max_tokens": 6})))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let v = res.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-test");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "mock says: hi there lorem ipsum"}])
    );
    assert_eq!(v["stop_reason"], "max_tokens");
    assert!(v["stop_sequence"].is_null());
    assert_eq!(
        v["usage"]["input_tokens"],
        tokens("be brief".len() + "hi there".len())
    );
    assert_eq!(v["usage"]["output_tokens"], 6);

    let v = mock
        .post(
            "/v1/messages",
            &messages(json!({"stop_sequences": ["lorem"]})),
        )
        .await
        .json();
    assert_eq!(v["content"][0]["text"], "mock says: hi there");
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], "lorem");

    let v = mock.post("/v1/messages", &messages(json!({}))).await.json();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 16);
}

#[tokio::test]
async fn message_stream_event_sequence() {
    let mock = start_default(Protocol::Anthropic).await;
    let res = mock
        .post(
            "/v1/messages",
            &messages(json!({"stream": true, "max_tokens": 4})),
        )
        .await;
    assert_eq!(res.header("content-type"), "text/event-stream");
    let events = sse_events(res.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for ((name, _), d) in events.iter().zip(&data) {
        assert_eq!(d["type"], name.as_deref().unwrap());
    }
    let msg = &data[0]["message"];
    assert_eq!(msg["model"], "claude-test");
    assert_eq!(msg["content"], json!([]));
    assert_eq!(msg["usage"]["output_tokens"], 1);
    assert_eq!(msg["usage"]["input_tokens"], 4);
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = data[3..7]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "mock says: hi there");
    assert_eq!(data[8]["delta"]["stop_reason"], "max_tokens");
    assert!(data[8]["delta"]["stop_sequence"].is_null());
    assert_eq!(data[8]["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn tool_use_non_stream_and_after_result() {
    let mock = start_default(Protocol::Anthropic).await;
    let v = mock
        .post("/v1/messages", &messages(json!({"tools": tools()})))
        .await
        .json();
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"input": "hi there"}));
    assert_eq!(v["usage"]["output_tokens"], 8);

    let mut body = messages(json!({"tools": tools()}));
    let msgs = body["messages"].as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": [block]}));
    msgs.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": block["id"], "content": "sunny"},
    ]}));
    let v = mock.post("/v1/messages", &body).await.json();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["type"], "text");
}

#[tokio::test]
async fn tool_use_stream() {
    let mock = start_default(Protocol::Anthropic).await;
    let res = mock
        .post(
            "/v1/messages",
            &messages(json!({"tools": tools(), "stream": true})),
        )
        .await;
    let events = sse_events(res.text());
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let block = &data[1]["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    assert_eq!(data[2]["type"], "ping");
    let n = data.len();
    let partial: String = data[3..n - 3]
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "content_block_delta");
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(n - 6 > 1, "partial_json is fragmented");
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"input": "hi there"})
    );
    assert_eq!(data[n - 3]["type"], "content_block_stop");
    assert_eq!(data[n - 2]["delta"]["stop_reason"], "tool_use");
    assert_eq!(data[n - 2]["usage"]["output_tokens"], 8);
    assert_eq!(data[n - 1]["type"], "message_stop");
}

#[tokio::test]
async fn api_key_required() {
    let mut cfg = MockConfig::new(Protocol::Anthropic, "keyed");
    cfg.api_key = Some("sk-test".into());
    let mock = start(cfg).await;
    let body = messages(json!({})).to_string();
    let res = mock.request(Method::POST, "/v1/messages", &body, &[]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.header("x-mock-name"), "keyed");
    assert_eq!(res.json()["error"]["type"], "authentication_error");
    let res = mock
        .request(
            Method::POST,
            "/v1/messages",
            &body,
            &[("x-api-key", "wrong")],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    for header in [
        ("x-api-key", "sk-test"),
        ("authorization", "Bearer sk-test"),
    ] {
        let res = mock
            .request(Method::POST, "/v1/messages", &body, &[header])
            .await;
        assert_eq!(res.status, StatusCode::OK);
    }
    // Health stays open.
    assert_eq!(mock.get("/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn models_and_count_tokens() {
    let mock = start_default(Protocol::Anthropic).await;
    let v = mock.get("/v1/models").await.json();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
    let v = mock
        .post("/v1/messages/count_tokens", &messages(json!({})))
        .await
        .json();
    assert_eq!(v["input_tokens"], 4);
    let res = mock.post("/v1/chat/completions", &json!({})).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.json()["error"]["type"], "not_found_error");
}
