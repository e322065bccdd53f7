//! Open-loop load: requests leave on a fixed schedule, each in its own task, whatever happened to
//! the earlier ones, so a slow or stopped node does not slow the offered load down.

use crate::support::{client, hello};
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
}

/// Send `rate` requests per second for `seconds` from `t0`, round-robin over `urls`, each with
/// `timeout`; every outcome, once all have ended.
pub async fn open_loop(
    urls: &[String],
    key: &str,
    t0: Instant,
    seconds: f64,
    rate: f64,
    timeout: Duration,
) -> Vec<Outcome> {
    let client = client();
    let body = Bytes::from(hello("m").to_string());
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
            if let Some(resp) = resp {
                // Read the body so the connection goes back to the pool.
                let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
            }
            Outcome {
                node,
                sent,
                done,
                answer,
            }
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}
