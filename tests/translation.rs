//! Translation through the running gateway: legacy completions onto an Anthropic backend, upstream
//! errors in the caller's dialect, model groups and unknown models.

mod support;

use serde_json::json;
use support::*;

fn mixed(oa: &Proc, an: &Proc) -> String {
    format!(
        "backends:\n{}{}{TENANTS}routing:\n  strategy: round-robin\n  max_attempts: 1\n",
        backend("oa", oa, "openai", ", models: { fast: gpt-4o-mini }"),
        backend(
            "an",
            an,
            "anthropic",
            ", models: { smart: claude-sonnet-4-5, legacy: claude-haiku-4-5 }"
        )
    )
}

#[tokio::test]
async fn legacy_completions_on_an_anthropic_backend() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&mixed(&oa, &an));
    let url = format!("{}/v1/completions", gw.url());
    let h = [
        ("authorization", "Bearer sk-acme"),
        ("content-type", "application/json"),
    ];
    let r = request(
        "POST",
        &url,
        &h,
        json!({"model": "legacy", "prompt": "complete me", "max_tokens": 8}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "legacy");
    assert!(
        v["choices"][0]["text"]
            .as_str()
            .unwrap()
            .contains("complete me")
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(r.header("x-sluice-backend"), Some("an"));
    let r = request(
        "POST",
        &url,
        &h,
        json!({"model": "legacy", "prompt": "stream me", "stream": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(
        t.contains("\"text_completion\"")
            && t.contains("\" stream\"")
            && t.contains("\" me\"")
            && t.trim_end().ends_with("data: [DONE]"),
        "{t}"
    );
}

#[tokio::test]
async fn model_groups_pick_the_backend_and_unknown_models_are_404_in_the_callers_shape() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&mixed(&oa, &an));
    for _ in 0..4 {
        let r = chat(&gw, "sk-acme", hello("smart"), &[]).await;
        assert_eq!(r.header("x-sluice-backend"), Some("an"));
        assert_eq!(r.json()["model"], "smart");
        let r = chat(&gw, "sk-acme", hello("fast"), &[]).await;
        assert_eq!(r.header("x-sluice-backend"), Some("oa"));
    }
    let r = chat(&gw, "sk-acme", hello("nope"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["param"], "model");
    let msg =
        json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let r = messages(&gw, "sk-acme", msg.to_string()).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    // /v1/models lists the groups.
    let r = request(
        "GET",
        &format!("{}/v1/models", gw.url()),
        &[("authorization", "Bearer sk-acme")],
        "",
    )
    .await;
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["fast", "legacy", "smart"]);
}

#[tokio::test]
async fn upstream_errors_come_back_in_the_callers_dialect() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&mixed(&oa, &an));
    mock_control(&oa, json!({"status": 400})).await;
    mock_control(&an, json!({"status": 400})).await;
    // Anthropic caller, OpenAI backend.
    let msg =
        json!({"model": "fast", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let r = messages(&gw, "sk-acme", msg.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    // OpenAI caller, Anthropic backend.
    let r = chat(&gw, "sk-acme", hello("smart"), &[]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_field_the_target_cannot_express_is_a_400_naming_it() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&mixed(&oa, &an));
    let body =
        json!({"model": "smart", "messages": [{"role": "user", "content": "x"}], "logprobs": true});
    let r = chat(&gw, "sk-acme", body, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "logprobs");
    // Nothing was sent upstream.
    assert_eq!(mock_requests(&an).await, 0);
}

/// One backend of each kind a Responses call can reach: `resp` serves Responses itself (on the
/// OpenAI mock), `chat` serves only Chat Completions (same mock), `claude` is Anthropic.
fn responses_trio(oa: &Proc, an: &Proc) -> String {
    format!(
        "backends:\n{}{}{}{TENANTS}routing:\n  strategy: round-robin\n  max_attempts: 1\n",
        backend(
            "oar",
            oa,
            "openai",
            ", apis: [chat, responses], models: { resp: gpt-4o }"
        ),
        backend("oac", oa, "openai", ", models: { chat: gpt-4o-mini }"),
        backend(
            "an",
            an,
            "anthropic",
            ", models: { claude: claude-sonnet-4-5 }"
        ),
    )
}

async fn responses(gw: &Proc, body: serde_json::Value) -> Resp {
    let h = [
        ("authorization", "Bearer sk-acme"),
        ("content-type", "application/json"),
    ];
    request(
        "POST",
        &format!("{}/v1/responses", gw.url()),
        &h,
        body.to_string(),
    )
    .await
}

/// The text of a Responses object's message items.
fn output_text(v: &serde_json::Value) -> String {
    v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[tokio::test]
async fn responses_pass_through_or_translate_with_usage_counted() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&responses_trio(&oa, &an));
    for (model, backend) in [("resp", "oar"), ("chat", "oac"), ("claude", "an")] {
        let before = metrics_text(&gw).await;
        let body = json!({"model": model, "instructions": "be brief", "input": "hello there",
            "max_output_tokens": 4, "metadata": {"run": "t1"}, "temperature": 0.5});
        let r = responses(&gw, body).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        assert_eq!(r.header("x-sluice-backend"), Some(backend));
        let v = r.json();
        assert_eq!(v["object"], "response", "{model}: {v}");
        assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
        assert!(output_text(&v).contains("hello there"), "{model}: {v}");
        assert_eq!(
            v["status"], "incomplete",
            "{model}: cut by max_output_tokens: {v}"
        );
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(v["metadata"]["run"], "t1", "{model}: metadata echoed");
        assert_eq!(v["usage"]["output_tokens"], 4, "{model}: {v}");
        let input = v["usage"]["input_tokens"].as_u64().unwrap();
        assert!(input > 0);
        assert_eq!(v["usage"]["total_tokens"].as_u64().unwrap(), input + 4);
        // Counted like any other call: the tokens of `usage`, for the tenant and backend.
        let after = metrics_text(&gw).await;
        let out = [("tenant", "acme"), ("backend", backend), ("kind", "output")];
        assert_eq!(
            grew(&before, &after, "sluice_tokens_total", &out),
            4.0,
            "{model}"
        );
        let inp = [("tenant", "acme"), ("backend", backend), ("kind", "input")];
        assert_eq!(
            grew(&before, &after, "sluice_tokens_total", &inp),
            input as f64,
            "{model}"
        );
    }
}

#[tokio::test]
async fn responses_function_calls_round_trip_through_every_backend_kind() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&responses_trio(&oa, &an));
    let tools = json!([{"type": "function", "name": "get_weather", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    for model in ["resp", "chat", "claude"] {
        let first = json!({"model": model, "tools": tools, "tool_choice": "auto",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "weather in Paris?"}]}]});
        let r = responses(&gw, first).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let v = r.json();
        let call = v["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("{model}: no function call: {v}"))
            .clone();
        assert_eq!(call["name"], "get_weather");
        let args: serde_json::Value =
            serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert!(args.is_object(), "{model}: {call}");
        let call_id = call["call_id"].as_str().unwrap();
        assert!(!call_id.is_empty());
        // The result goes back as a function_call_output item, with the call replayed before it.
        let second = json!({"model": model, "tools": tools, "input": [
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call_id, "output": "sunny, 21 C"},
        ]});
        let r = responses(&gw, second).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "completed", "{model}: {v}");
        assert!(!output_text(&v).is_empty(), "{model}: a text answer: {v}");
    }
}

#[tokio::test]
async fn responses_streams_carry_the_typed_events_through_every_backend_kind() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&responses_trio(&oa, &an));
    for model in ["resp", "chat", "claude"] {
        let body = json!({"model": model, "input": "stream me", "stream": true});
        let r = responses(&gw, body).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let text = r.text();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        let want = [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ];
        let mut at = 0;
        for k in &kinds {
            if at < want.len() && *k == want[at] {
                at += 1;
            }
        }
        assert_eq!(at, want.len(), "{model}: events in order: {kinds:?}");
        assert_eq!(kinds.last(), Some(&"response.completed"), "{model}");
        let last = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .unwrap();
        let done: serde_json::Value = serde_json::from_str(last).unwrap();
        assert!(done["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);
        assert!(
            output_text(&done["response"]).contains("stream me"),
            "{done}"
        );
        // Sequence numbers count up from 0.
        let seqs: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| {
                serde_json::from_str::<serde_json::Value>(d).unwrap()["sequence_number"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert!(
            seqs.iter().enumerate().all(|(i, s)| *s == i as u64),
            "{model}: {seqs:?}"
        );
    }
}

#[tokio::test]
async fn responses_fields_only_a_responses_backend_can_express_are_400_naming_them() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&responses_trio(&oa, &an));
    let cases = [
        (
            json!({"previous_response_id": "resp_123"}),
            "previous_response_id",
        ),
        (json!({"background": true}), "background"),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
    ];
    for model in ["chat", "claude"] {
        for (extra, field) in &cases {
            let mut body = json!({"model": model, "input": "x"});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let r = responses(&gw, body).await;
            assert_eq!(r.status, 400, "{model} {field}: {}", r.text());
            assert_eq!(r.json()["error"]["param"], *field, "{model}: {}", r.text());
        }
    }
    // What Anthropic cannot express is named as the Responses client wrote it.
    let body = json!({"model": "claude", "input": "x",
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}});
    let r = responses(&gw, body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "text.format.type");
    assert_eq!(mock_requests(&an).await, 0, "nothing was sent upstream");
    // A Responses backend keeps state: the follow-up continues the stored conversation.
    let r = responses(&gw, json!({"model": "resp", "input": "remember me"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json();
    let follow = json!({"model": "resp", "input": "and now?", "previous_response_id": first["id"]});
    let r = responses(&gw, follow).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["previous_response_id"], first["id"]);
    assert!(
        v["usage"]["input_tokens"].as_u64() > first["usage"]["input_tokens"].as_u64(),
        "the stored turns count as input: {v}"
    );
}

#[tokio::test]
async fn count_tokens_is_the_anthropic_backends_count_or_an_estimate_marked_so() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let gw = gateway(&mixed(&oa, &an));
    let url = format!("{}/v1/messages/count_tokens", gw.url());
    let h = [
        ("x-api-key", "sk-acme"),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    let body = |model: &str| {
        json!({"model": model, "system": "be brief",
            "messages": [{"role": "user", "content": "count these words please"}]})
        .to_string()
    };
    // An Anthropic backend serves `smart`: its own count, passed through.
    let r = request("POST", &url, &h, body("smart")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(r.header("x-sluice-token-estimate"), None);
    assert_eq!(r.header("x-sluice-backend"), Some("an"));
    assert_eq!(mock_requests(&an).await, 1);
    // Only an OpenAI backend serves `fast`: Sluice's estimate, said to be one.
    let r = request("POST", &url, &h, body("fast")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(r.header("x-sluice-token-estimate"), Some("true"));
    assert_eq!(mock_requests(&oa).await, 0);
    // Errors on Anthropic paths are in Anthropic's shape.
    let anthropic_error = |r: &Resp, kind: &str| {
        let v = r.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
    };
    let r = request("POST", &url, &h, body("nope")).await;
    assert_eq!(r.status, 404);
    anthropic_error(&r, "not_found_error");
    let r = request("POST", &url, &[("x-api-key", "sk-wrong")], body("smart")).await;
    assert_eq!(r.status, 401);
    anthropic_error(&r, "authentication_error");
    let r = request(
        "POST",
        &format!("{}/v1/messages/batches", gw.url()),
        &h,
        "{}",
    )
    .await;
    assert_eq!(r.status, 404);
    anthropic_error(&r, "not_found_error");
}

#[tokio::test]
async fn responses_reserve_tokens_and_reconcile_them_from_usage_like_chat() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let cfg = responses_trio(&oa, &an).replace(
        TENANTS,
        "tenants:\n  - { id: acme, keys: [sk-acme], limits: { tokens_per_minute: 600 } }\nshaping: { max_wait_ms: 0 }\n",
    );
    let gw = gateway(&cfg);
    let remaining = |r: &Resp| -> f64 {
        r.header("x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap()
    };
    let t0 = std::time::Instant::now();
    // Passed through, then translated to Anthropic and streamed: each reserves its estimate plus
    // max_output_tokens, and gets back what its usage did not take.
    let body = |model: &str, stream: bool| json!({"model": model, "input": "hello there", "max_output_tokens": 40, "stream": stream});
    let r1 = responses(&gw, body("resp", false)).await;
    assert_eq!(r1.status, 200, "{}", r1.text());
    assert_eq!(r1.header("x-ratelimit-limit-tokens"), Some("600"));
    let reserve = 600.0 - remaining(&r1);
    assert!((41.0..=50.0).contains(&reserve), "estimate + 40: {reserve}");
    let used1 = r1.json()["usage"]["total_tokens"].as_f64().unwrap();
    let r2 = responses(&gw, body("claude", true)).await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    let used2 = r2
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .unwrap()["response"]["usage"]["total_tokens"]
        .as_f64()
        .unwrap();
    let r3 = responses(&gw, body("chat", false)).await;
    assert_eq!(r3.status, 200, "{}", r3.text());
    let refill = 10.0 * t0.elapsed().as_secs_f64() + 2.0;
    let reconciled = 600.0 - used1 - used2 - reserve;
    let rem3 = remaining(&r3);
    assert!(
        rem3 >= reconciled - 2.0 && rem3 <= reconciled + refill,
        "remaining {rem3}, reconciled would be {reconciled}"
    );
    // More than is left: 429 with the token headers, in OpenAI's shape.
    let big = json!({"model": "resp", "input": "x", "max_output_tokens": 5000});
    let r = responses(&gw, big).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));
}
