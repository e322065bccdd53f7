//! Tests of the mock upstream over real HTTP (hyper client against a spawned mock).

mod anthropic;
mod control;
mod openai;
mod responses;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{MockConfig, spawn};
use crate::protocol::Protocol;

/// A running mock plus a client; shuts the mock down when dropped.
pub(super) struct Mock {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A complete response.
pub(super) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}"))
            .to_str()
            .unwrap()
    }
}

pub(super) async fn start(cfg: MockConfig) -> Mock {
    let shutdown = CancellationToken::new();
    let addr = spawn("127.0.0.1:0".parse().unwrap(), cfg, shutdown.clone())
        .await
        .expect("mock binds");
    let client = Client::builder(TokioExecutor::new()).build_http();
    Mock {
        addr,
        shutdown,
        client,
    }
}

pub(super) async fn start_default(protocol: Protocol) -> Mock {
    start(MockConfig::new(protocol, "mock")).await
}

impl Mock {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let res = self.client.request(req).await.expect("request succeeds");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::POST, path, &body.to_string(), &[])
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, "", &[]).await
    }

    /// Send a request and return the arrival time of each body frame plus the frames.
    pub async fn frames(&self, path: &str, body: &Value) -> Vec<(Instant, Bytes)> {
        let req = Request::post(format!("http://{}{}", self.addr, path))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let res = self.client.request(req).await.expect("request succeeds");
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("frame").into_data() {
                out.push((Instant::now(), data));
            }
        }
        out
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Parse an SSE body into `(event name, data)` pairs.
pub(super) fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    assert!(body.ends_with("\n\n"), "SSE body ends with a blank line");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data)
        })
        .collect()
}

/// Poll `check` until it returns true or the deadline passes.
pub(super) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Prompt tokens of a text: ceil(chars / 4).
pub(super) fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4).max(1) as u64
}

#[test]
fn config_flags_parse_with_defaults() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockConfig,
    }
    let d = Cli::parse_from(["mock"]).mock;
    let n = MockConfig::new(Protocol::Openai, "mock");
    assert_eq!(format!("{d:?}"), format!("{n:?}"));
    let c = Cli::parse_from([
        "mock",
        "--protocol",
        "anthropic",
        "--name",
        "a1",
        "--rate-limit-rps",
        "2.5",
        "--api-key",
        "k",
        "--output-tokens",
        "3",
        "--tokens-per-sec",
        "10",
    ])
    .mock;
    assert_eq!(c.protocol, Protocol::Anthropic);
    assert_eq!(c.name, "a1");
    assert_eq!(c.rate_limit_rps, Some(2.5));
    assert_eq!(c.api_key.as_deref(), Some("k"));
    assert_eq!(c.output_tokens, 3);
    assert_eq!(c.tokens_per_sec, 10.0);
}
