//! Open-loop load: requests leave on a fixed schedule, each in its own task, whatever happened to
//! the earlier ones, so a slow or stopped node does not slow the offered load down.

use crate::support::{Resp, client, hello, request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::{Duration, Instant};

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The status of the response head.
    Status(u16),
    /// No response: connection refused or reset (a killed node).
    Failed,
    /// No response head within the client timeout.
    TimedOut,
}

/// One request: which node, when it left and when its answer's head came (seconds after the start).
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub node: usize,
    pub sent: f64,
    pub done: f64,
    pub answer: Answer,
    /// `usage.total_tokens` of a 200 (0 otherwise).
    pub tokens: u64,
}

/// The chat request body the load sends (with `max_tokens` for token limits).
fn body(max_tokens: Option<u32>) -> Bytes {
    let mut b = hello("m");
    if let Some(m) = max_tokens {
        b["max_tokens"] = m.into();
    }
    Bytes::from(b.to_string())
}

/// One request to `url` for `key`, answered in full.
pub async fn ask(url: &str, key: &str, max_tokens: Option<u32>) -> Resp {
    let auth = format!("Bearer {key}");
    request(
        "POST",
        &format!("{url}/v1/chat/completions"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body(max_tokens),
    )
    .await
}

/// `usage.total_tokens` of an answer's body (0 if it has none).
fn total_tokens(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["usage"]["total_tokens"].as_u64())
        .unwrap_or(0)
}

/// Send `rate` requests per second for `seconds` from `t0`, round-robin over `urls`, each with
/// `timeout` (and `max_tokens`, if given); every outcome, once all have ended.
pub async fn open_loop(
    urls: &[String],
    key: &str,
    max_tokens: Option<u32>,
    t0: Instant,
    seconds: f64,
    rate: f64,
    timeout: Duration,
) -> Vec<Outcome> {
    let client = client();
    let body = body(max_tokens);
    let auth = format!("Bearer {key}");
    let n = (seconds * rate).round() as usize;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let at = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let node = i % urls.len();
        let req = http::Request::post(format!("{}/v1/chat/completions", urls[node]))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let sent = t0.elapsed().as_secs_f64();
            let (answer, resp) = match tokio::time::timeout(timeout, client.request(req)).await {
                Ok(Ok(resp)) => (Answer::Status(resp.status().as_u16()), Some(resp)),
                Ok(Err(_)) => (Answer::Failed, None),
                Err(_) => (Answer::TimedOut, None),
            };
            let done = t0.elapsed().as_secs_f64();
            let mut tokens = 0;
            if let Some(resp) = resp {
                // Read the body (so the connection goes back to the pool) for its usage.
                if let Ok(Ok(b)) = tokio::time::timeout(timeout, resp.into_body().collect()).await
                    && answer == Answer::Status(200)
                {
                    tokens = total_tokens(&b.to_bytes());
                }
            }
            Outcome {
                node,
                sent,
                done,
                answer,
                tokens,
            }
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}
