//! The Responses API of the OpenAI mock: whole, streamed, function calls, stored state.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{sse_events, start_default};
use crate::protocol::Protocol;

fn text(v: &Value) -> &str {
    v["output"][0]["content"][0]["text"].as_str().unwrap()
}

#[tokio::test]
async fn a_response_whole_and_streamed() {
    let mock = start_default(Protocol::Openai).await;
    let v = mock
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "hello there", "instructions": "be brief"}),
        )
        .await
        .json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert!(text(&v).starts_with("mock says: hello there"));
    assert_eq!(v["usage"]["output_tokens"], 16);
    assert_eq!(v["instructions"], "be brief");
    let v = mock
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "max_output_tokens": 3}),
        )
        .await
        .json();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    let res = mock
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "stream": true, "max_output_tokens": 2}),
        )
        .await;
    let events = sse_events(res.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    // Opened, one delta per token, closed, then the final event (cut by max_output_tokens).
    assert_eq!(names[..2], ["response.created", "response.in_progress"]);
    assert_eq!(
        names[2..4],
        ["response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(
        names.iter().filter(|n| n.ends_with("text.delta")).count(),
        2
    );
    assert_eq!(
        names[6..9],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done"
        ]
    );
    assert_eq!(names.last(), Some(&"response.incomplete"));
    for (i, (name, data)) in events.iter().enumerate() {
        let d: Value = serde_json::from_str(data).unwrap();
        assert_eq!(d["type"], name.as_deref().unwrap());
        assert_eq!(d["sequence_number"], i as u64);
    }
}

#[tokio::test]
async fn function_calls_and_stored_conversations() {
    let mock = start_default(Protocol::Openai).await;
    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
    let v = mock
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "find cats", "tools": tools}),
        )
        .await
        .json();
    let call = &v["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "lookup");
    assert_eq!(call["arguments"], "{\"input\":\"find cats\"}");
    // The result, continuing the stored response: a text answer.
    let output =
        json!([{"type": "function_call_output", "call_id": call["call_id"], "output": "3 cats"}]);
    let r = mock
        .post("/v1/responses", &json!({"model": "m", "input": output, "tools": tools, "previous_response_id": v["id"]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let next = r.json();
    assert_eq!(next["previous_response_id"], v["id"]);
    assert_eq!(next["output"][0]["type"], "message");
    assert!(next["usage"]["input_tokens"].as_u64() > v["usage"]["input_tokens"].as_u64());
    // Stored: retrieve, its input items, delete.
    let id = next["id"].as_str().unwrap();
    let got = mock.get(&format!("/v1/responses/{id}")).await.json();
    assert_eq!(got["id"], id);
    let items = mock
        .get(&format!("/v1/responses/{id}/input_items"))
        .await
        .json();
    assert_eq!(items["data"][0]["type"], "function_call_output");
    let del = mock
        .request(Method::DELETE, &format!("/v1/responses/{id}"), "", &[])
        .await;
    assert_eq!(del.json()["deleted"], true);
    assert_eq!(
        mock.get(&format!("/v1/responses/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    // Unknown or not stored: 404 naming previous_response_id.
    let r = mock
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "store": false}),
        )
        .await
        .json();
    let r = mock
        .post(
            "/v1/responses",
            &json!({"model": "m", "input": "x", "previous_response_id": r["id"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "previous_response_not_found");
    assert_eq!(r.json()["error"]["param"], "previous_response_id");
}
