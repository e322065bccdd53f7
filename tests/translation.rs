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
