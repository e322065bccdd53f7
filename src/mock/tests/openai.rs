//! OpenAI protocol tests: chat (whole, streamed, tools), completions, embeddings, models.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::{sse_events, start, start_default, tokens};
use crate::mock::MockConfig;
use crate::protocol::Protocol;

const HELLO: &str = "hello big world";

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": HELLO},
        ],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn expected_text(words: usize) -> String {
    let all = "mock says: hello big world lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et";
    all.split(' ').take(words).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn chat_non_stream_text_and_usage() {
    let mock = start_default(Protocol::Openai).await;
    let res = mock.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("content-type"), "application/json");
    assert_eq!(res.header("x-mock-name"), "mock");
    let v = res.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-test");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], expected_text(16));
    assert_eq!(choice["finish_reason"], "stop");
    let prompt = tokens("be brief".len() + HELLO.len());
    assert_eq!(v["usage"]["prompt_tokens"], prompt);
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["usage"]["total_tokens"], prompt + 16);
}

#[tokio::test]
async fn chat_text_parts_are_echoed() {
    let mock = start_default(Protocol::Openai).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hello big"},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "world"},
    ]}]});
    let v = mock.post("/v1/chat/completions", &body).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], expected_text(16));
}

#[tokio::test]
async fn chat_max_tokens_gives_length() {
    let mock = start_default(Protocol::Openai).await;
    for field in ["max_tokens", "max_completion_tokens"] {
        let v = mock
            .post("/v1/chat/completions", &chat(json!({ field: 5 })))
            .await
            .json();
        assert_eq!(v["choices"][0]["message"]["content"], expected_text(5));
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 5);
    }
}

#[tokio::test]
async fn chat_stop_sequence() {
    let mock = start_default(Protocol::Openai).await;
    let v = mock
        .post("/v1/chat/completions", &chat(json!({"stop": ["dolor"]})))
        .await
        .json();
    assert_eq!(v["choices"][0]["message"]["content"], expected_text(7));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let mock = start_default(Protocol::Openai).await;
    let body = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let res = mock
        .request(
            http::Method::POST,
            "/v1/chat/completions",
            &body.to_string(),
            &[],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("content-type"), "text/event-stream");
    assert_eq!(res.header("cache-control"), "no-cache");
    let events = sse_events(res.text());
    assert!(events.iter().all(|(name, _)| name.is_none()));
    let (last, chunks) = events.split_last().unwrap();
    assert_eq!(last.1, "[DONE]");
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    // role chunk + 16 words + finish chunk + usage chunk
    assert_eq!(chunks.len(), 19);
    let id = chunks[0]["id"].as_str().unwrap();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert_eq!(c["model"], "gpt-test");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..17]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected_text(16));
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "mock");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], " says:");
    for c in &chunks[..18] {
        assert!(c["usage"].is_null() && c.get("usage").is_some());
    }
    assert_eq!(chunks[17]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[17]["choices"][0]["delta"], json!({}));
    let usage_chunk = &chunks[18];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 16);
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens"],
        tokens("be brief".len() + HELLO.len())
    );
}

#[tokio::test]
async fn chat_stream_without_usage_has_no_usage_field() {
    let mock = start_default(Protocol::Openai).await;
    let res = mock
        .post(
            "/v1/chat/completions",
            &chat(json!({"stream": true, "max_tokens": 3})),
        )
        .await;
    let events = sse_events(res.text());
    assert_eq!(events.len(), 1 + 3 + 1 + 1);
    for (_, d) in &events[..5] {
        let c: Value = serde_json::from_str(d).unwrap();
        assert!(c.get("usage").is_none());
    }
    let finish: Value = serde_json::from_str(&events[4].1).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn stream_frames_arrive_as_produced() {
    let mut cfg = MockConfig::new(Protocol::Openai, "mock");
    cfg.tokens_per_sec = 50.0;
    cfg.output_tokens = 10;
    let mock = start(cfg).await;
    let frames = mock
        .frames("/v1/chat/completions", &chat(json!({"stream": true})))
        .await;
    // role + 10 words + finish + [DONE], each its own frame.
    assert_eq!(frames.len(), 13);
    let first_word = frames[1].0;
    let done = frames.last().unwrap().0;
    // 9 paced gaps of 20ms: the first token came well before the end.
    assert!(
        done - first_word >= Duration::from_millis(150),
        "{:?}",
        done - first_word
    );
}

#[tokio::test]
async fn chat_tool_call_non_stream() {
    let mock = start_default(Protocol::Openai).await;
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "other"}},
    ]);
    let v = mock
        .post("/v1/chat/completions", &chat(json!({ "tools": tools })))
        .await
        .json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"input": HELLO}));
    assert_eq!(v["usage"]["completion_tokens"], 8);

    // After a tool result, the answer is text again.
    let mut body = chat(json!({ "tools": tools }));
    let msgs = body["messages"].as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    msgs.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "sunny"}));
    let v = mock.post("/v1/chat/completions", &body).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], expected_text(16));

    // tool_choice "none" disables the call.
    let v = mock
        .post(
            "/v1/chat/completions",
            &chat(json!({"tools": tools, "tool_choice": "none"})),
        )
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_tool_call_stream() {
    let mock = start_default(Protocol::Openai).await;
    let tools = json!([{"type": "function", "function": {"name": "lookup"}}]);
    let body =
        chat(json!({"tools": tools, "stream": true, "stream_options": {"include_usage": true}}));
    let res = mock.post("/v1/chat/completions", &body).await;
    let events = sse_events(res.text());
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    let call = &first["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let n = chunks.len();
    let args: String = chunks[1..n - 2]
        .iter()
        .map(|c| {
            let tc = &c["choices"][0]["delta"]["tool_calls"][0];
            assert_eq!(tc["index"], 0);
            tc["function"]["arguments"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(n > 4, "arguments are split into fragments");
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args, json!({"input": HELLO}));
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 8);
}

#[tokio::test]
async fn legacy_completions() {
    let mock = start_default(Protocol::Openai).await;
    let body = json!({"model": "davinci", "prompt": "say hi", "max_tokens": 4});
    let v = mock.post("/v1/completions", &body).await.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "mock says: say hi");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let body = json!({"model": "davinci", "prompt": "x", "stream": true, "max_tokens": 3,
        "stream_options": {"include_usage": true}});
    let res = mock.post("/v1/completions", &body).await;
    let events = sse_events(res.text());
    assert_eq!(events.len(), 3 + 1 + 1 + 1);
    let text: String = events[..3]
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "mock says: x");
    let usage: Value = serde_json::from_str(&events[4].1).unwrap();
    assert_eq!(usage["object"], "text_completion");
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(events[5].1, "[DONE]");
}

#[tokio::test]
async fn embeddings_and_models() {
    let mock = start_default(Protocol::Openai).await;
    let body = json!({"model": "text-embedding-3-small", "input": ["abc", "defgh"]});
    let v = mock.post("/v1/embeddings", &body).await.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["object"], "embedding");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 16);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    let again = mock.post("/v1/embeddings", &body).await.json();
    assert_eq!(v["data"], again["data"]);
    let b64 = json!({"model": "e", "input": "abc", "encoding_format": "base64", "dimensions": 4});
    let v = mock.post("/v1/embeddings", &b64).await.json();
    assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 24);

    let models = mock.get("/v1/models").await.json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["object"], "model");
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let mock = start_default(Protocol::Openai).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::post(format!("http://{}/v1/chat/completions", mock.addr))
        .body(Full::new(Bytes::from(
            chat(json!({"stream": true})).to_string(),
        )))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body.ends_with(b"data: [DONE]\n\n"));
}
