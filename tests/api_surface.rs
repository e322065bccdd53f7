//! What clients read of Sluice besides generations: the model lists (`/v1/models`,
//! `/v1/models/{id}`, OpenAI's and Anthropic's shapes) and the client headers passed upstream.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(gw: &Proc, path: &str, headers: &[(&str, &str)]) -> Resp {
    request("GET", &format!("{}{path}", gw.url()), headers, "").await
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn model_lists_name_every_callable_model_in_the_callers_shape() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    let cfg = format!(
        "backends:\n{}{}{}{TENANTS}routing:\n  strategy: round-robin\n",
        backend("oa", &oa, "openai", ", models: { fast: gpt-4o-mini }"),
        // Serves any model: only its list_models can be shown.
        backend("any", &oa, "openai", ", list_models: [llama-3, qwen-2]"),
        backend(
            "an",
            &an,
            "anthropic",
            ", models: { smart: claude-x, fast: claude-y }"
        ),
    );
    let gw = gateway(&cfg);
    let bearer = [("authorization", "Bearer sk-acme")];
    let r = get(&gw, "/v1/models", &bearer).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(ids(&v), ["fast", "llama-3", "qwen-2", "smart"]);
    assert_eq!(v["data"][0]["object"], "model");
    let r = get(&gw, "/v1/models/qwen-2", &bearer).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "qwen-2");
    assert_eq!(r.json()["object"], "model");
    let r = get(&gw, "/v1/models/nope", &bearer).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found", "{}", r.text());
    // Anthropic's SDK sends anthropic-version: its shape.
    let anthropic = [
        ("x-api-key", "sk-acme"),
        ("anthropic-version", "2023-06-01"),
    ];
    let r = get(&gw, "/v1/models", &anthropic).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(ids(&v), ["fast", "llama-3", "qwen-2", "smart"]);
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], "fast");
    assert_eq!(v["last_id"], "smart");
    assert_eq!(v["data"][3]["type"], "model");
    assert_eq!(v["data"][3]["display_name"], "smart");
    let r = get(&gw, "/v1/models/smart", &anthropic).await;
    assert_eq!(r.json()["type"], "model");
    let r = get(&gw, "/v1/models/nope", &anthropic).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = get(&gw, "/v1/models", &[("anthropic-version", "2023-06-01")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
}

/// A one-shot upstream on a real socket: answers one chat completion and hands back the request
/// head it read.
async fn recording_upstream() -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
        }
        let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(body.as_bytes()).await.unwrap();
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        text[..text.find("\r\n\r\n").unwrap()].to_string()
    });
    (url, task)
}

#[tokio::test]
async fn beta_headers_and_the_allowlist_are_forwarded_never_the_clients_key() {
    let (url, seen) = recording_upstream().await;
    let cfg = format!(
        "backends:\n  - {{ name: rec, url: \"{url}\", protocol: openai, api_key_env: REC_KEY, forward_headers: [X-Trace-Tag] }}\n{TENANTS}routing:\n  strategy: round-robin\n"
    );
    let gw = gateway_env(&cfg, &[("REC_KEY", "sk-backend-key")]);
    let r = chat(
        &gw,
        "sk-acme",
        hello("m"),
        &[
            ("openai-beta", "responses=v1"),
            ("x-trace-tag", "t-42"),
            ("x-not-listed", "secret"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let head = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap()
        .unwrap();
    assert!(head.contains("\r\nopenai-beta: responses=v1"), "{head}");
    assert!(head.contains("\r\nx-trace-tag: t-42"), "{head}");
    assert!(!head.contains("x-not-listed"), "{head}");
    assert!(
        head.contains("authorization: bearer sk-backend-key"),
        "{head}"
    );
    assert!(!head.contains("sk-acme"), "{head}");
}

#[test]
fn forward_headers_never_name_credentials() {
    let dir = tmp_dir();
    for bad in ["Authorization", "x-api-key", "host"] {
        let path = dir.join("bad.yaml");
        let cfg = format!(
            "backends:\n  - {{ name: b, url: \"http://127.0.0.1:9\", protocol: openai, forward_headers: [{bad}] }}\n{TENANTS}routing:\n  strategy: round-robin\n"
        );
        std::fs::write(&path, cfg).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["validate", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{bad}: {err}");
        assert!(
            err.contains("backends[0].forward_headers[0]"),
            "{bad}: {err}"
        );
    }
}

#[tokio::test]
async fn a_key_sees_only_the_models_its_requests_can_reach() {
    let (oa, an) = (mock("openai", "oa", &[]), mock("anthropic", "an", &[]));
    // `smart` is routed to the Anthropic backend for premium keys only; the default route has only
    // the OpenAI backend, which does not serve it.
    let cfg = format!(
        "backends:\n{}{}{TENANTS}routing:\n  rules:\n    - {{ name: premium-smart, match: {{ user_tier: premium, model: smart }}, route: {{ backend: an }} }}\n  default: {{ backend: oa }}\n",
        backend("oa", &oa, "openai", ", models: { fast: gpt-4o-mini }"),
        backend("an", &an, "anthropic", ", models: { smart: claude-x }"),
    );
    let gw = gateway(&cfg);
    let premium = get(&gw, "/v1/models", &[("authorization", "Bearer sk-acme")]).await;
    assert_eq!(ids(&premium.json()), ["fast", "smart"]);
    let free = get(&gw, "/v1/models", &[("authorization", "Bearer sk-free")]).await;
    assert_eq!(ids(&free.json()), ["fast"]);
    let r = get(
        &gw,
        "/v1/models/smart",
        &[("authorization", "Bearer sk-free")],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    // And what the list says is what the calls do.
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(chat(&gw, "sk-free", body.clone(), &[]).await.status, 404);
    assert_eq!(chat(&gw, "sk-acme", body, &[]).await.status, 200);
}
