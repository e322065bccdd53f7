//! Fault injection and admin tests: rate limits, forced status, health, stats, bad requests.

use http::{Method, StatusCode};
use serde_json::json;

use super::{eventually, start, start_default};
use crate::mock::MockConfig;
use crate::protocol::Protocol;

fn chat() -> serde_json::Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn rate_limited_gets_429_with_retry_after() {
    let mut cfg = MockConfig::new(Protocol::Openai, "mock");
    cfg.rate_limit_rps = Some(0.5);
    let mock = start(cfg).await;
    let first = mock.post("/v1/chat/completions", &chat()).await;
    assert_eq!(first.status, StatusCode::OK);
    let second = mock.post("/v1/chat/completions", &chat()).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = second.header("retry-after").parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(second.json()["error"]["type"], "rate_limit_error");

    // Lifting the limit at run time lets requests through again.
    let res = mock
        .post("/_mock/control", &json!({"rate_limit_rps": null}))
        .await;
    assert!(res.json()["rate_limit_rps"].is_null());
    let third = mock.post("/v1/chat/completions", &chat()).await;
    assert_eq!(third.status, StatusCode::OK);
}

#[tokio::test]
async fn anthropic_rate_limit_shape() {
    let mock = start_default(Protocol::Anthropic).await;
    mock.post("/_mock/control", &json!({"rate_limit_rps": 0}))
        .await;
    let res = mock
        .post(
            "/v1/messages",
            &json!({"model": "m", "max_tokens": 5, "messages": []}),
        )
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.header("retry-after"), "1");
    let v = res.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn control_forces_status_and_counts() {
    let mock = start_default(Protocol::Openai).await;
    let res = mock
        .post("/_mock/control", &json!({"status": 503, "latency_ms": 0}))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let settings = res.json();
    assert_eq!(settings["status"], 503);
    assert_eq!(settings["latency_ms"], 0);

    let res = mock.post("/v1/chat/completions", &chat()).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.json()["error"]["type"], "server_error");

    mock.post("/_mock/control", &json!({"status": null})).await;
    assert_eq!(
        mock.post("/v1/chat/completions", &chat()).await.status,
        StatusCode::OK
    );

    let stats = mock.get("/_mock/stats").await.json();
    assert_eq!(stats["name"], "mock");
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["by_status"], json!({"200": 1, "503": 1}));
    assert_eq!(stats["in_flight"], 0);
    assert!(stats["max_in_flight"].as_u64().unwrap() >= 1);

    mock.post("/_mock/reset", &json!({})).await;
    let stats = mock.get("/_mock/stats").await.json();
    assert_eq!(stats["requests"], 0);
    assert_eq!(stats["by_status"], json!({}));
}

#[tokio::test]
async fn control_rejects_bad_settings_atomically() {
    let mock = start_default(Protocol::Openai).await;
    for bad in [
        json!({"error_rate": 2.0}),
        json!({"latency_ms": -1}),
        json!({"status": 42}),
        json!({"latency_ms": 5, "nope": 1}),
    ] {
        let res = mock.post("/_mock/control", &bad).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let settings = mock.get("/_mock/control").await.json();
    assert_eq!(settings["latency_ms"], 0);
}

#[tokio::test]
async fn error_rate_and_health() {
    let mock = start_default(Protocol::Anthropic).await;
    mock.post(
        "/_mock/control",
        &json!({"error_rate": 1.0, "healthy": false}),
    )
    .await;
    let res = mock
        .post("/v1/messages", &json!({"model": "m", "messages": []}))
        .await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.json()["error"]["type"], "api_error");
    let health = mock.get("/health").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    mock.post("/_mock/control", &json!({"error_rate": 0, "healthy": true}))
        .await;
    let health = mock.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), json!({"status": "ok"}));
    assert_eq!(health.header("x-mock-name"), "mock");
}

#[tokio::test]
async fn malformed_json_unknown_path_wrong_method() {
    let mock = start_default(Protocol::Openai).await;
    let res = mock
        .request(Method::POST, "/v1/chat/completions", "{not json", &[])
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.json()["error"]["type"], "invalid_request_error");
    let res = mock
        .post("/v1/chat/completions", &json!({"model": "m"}))
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);

    let res = mock.get("/v1/nope").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.json()["error"]["type"], "invalid_request_error");

    let res = mock.get("/v1/chat/completions").await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.header("allow"), "POST");
    assert!(res.json()["error"]["message"].is_string());

    let stats = mock.get("/_mock/stats").await.json();
    assert_eq!(stats["by_status"], json!({"400": 2, "404": 1, "405": 1}));
}

#[tokio::test]
async fn stream_counts_in_flight_until_done() {
    let mut cfg = MockConfig::new(Protocol::Openai, "mock");
    cfg.tokens_per_sec = 1000.0;
    let mock = start(cfg).await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let res = mock.post("/v1/chat/completions", &body).await;
    assert!(res.text().ends_with("data: [DONE]\n\n"));
    eventually("in_flight back to 0", || async {
        mock.get("/_mock/stats").await.json()["in_flight"] == 0
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(crate::mock::serve(
        listener,
        MockConfig::new(Protocol::Openai, "mock"),
        shutdown.clone(),
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
