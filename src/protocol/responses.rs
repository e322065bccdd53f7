//! The OpenAI Responses API's `response` object, as both a translating gateway and the simulated
//! upstream build it: the answer's head, output and usage, and the request's settings echoed.

use serde_json::{Value, json};

/// What a `response` object says of itself.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// The whole id, `resp_…`.
    pub id: &'a str,
    pub model: &'a str,
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: &'a str,
    pub store: bool,
    pub previous_response_id: Option<&'a str>,
}

/// A `response` object answering `req` (the client's request, whose settings it echoes).
pub fn response_object(
    req: &Value,
    head: &ResponseHead<'_>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let get = |k: &str| req.get(k).cloned().unwrap_or(Value::Null);
    let or = |k: &str, d: Value| req.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(d);
    let incomplete = if head.status == "incomplete" {
        json!({"reason": "max_output_tokens"})
    } else {
        Value::Null
    };
    json!({
        "id": head.id,
        "object": "response",
        "created_at": head.created_at,
        "status": head.status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": get("instructions"),
        "max_output_tokens": get("max_output_tokens"),
        "model": head.model,
        "output": output,
        "parallel_tool_calls": or("parallel_tool_calls", json!(true)),
        "previous_response_id": head.previous_response_id,
        "reasoning": {"effort": null, "summary": null},
        "service_tier": get("service_tier"),
        "store": head.store,
        "temperature": or("temperature", json!(1.0)),
        "text": or("text", json!({"format": {"type": "text"}})),
        "tool_choice": or("tool_choice", json!("auto")),
        "tools": or("tools", json!([])),
        "top_p": or("top_p", json!(1.0)),
        "truncation": "disabled",
        "usage": usage,
        "user": get("user"),
        "metadata": or("metadata", json!({})),
    })
}
