//! Test support: real processes on loopback. Starts `sluice mock-upstream` and `sluice run` as child
//! processes on port 0, reads their bound address from stdout, kills them on drop. A small HTTP client
//! over real sockets, `/metrics` reading ([`metrics`]), waits with a deadline ([`wait`]: nothing sleeps
//! a fixed time), a real `redis-server` ([`redis`]) and what the shaping tests share ([`shaping`]).
#![allow(dead_code)]

pub mod cluster;
pub mod metrics;
pub mod redis;
pub mod shaping;
pub mod wait;

// Each test file uses a part of these: the rest is unused there.
#[allow(unused_imports)]
pub use metrics::{gauge, grew, metric, metrics_text};
#[allow(unused_imports)]
pub use wait::{eventually, poll, try_poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A loopback port nothing listens on, free for TCP and for UDP (gossip) alike.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

/// A child process killed on drop; its stderr is kept in a file for failure messages.
pub struct Proc {
    pub child: Child,
    pub addr: String,
    pub log: std::path::PathBuf,
}

impl Proc {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn tmp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sluice-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_000
        + (Instant::now().elapsed().subsec_nanos() as u64 % 1_000_000)
}

/// Spawn `sluice ARGS`, wait (≤ 20 s) for a stdout line containing `marker` followed by `http(s)://ADDR`.
pub fn spawn(args: &[&str], envs: &[(&str, &str)], marker: &str) -> Proc {
    let dir = tmp_dir();
    let log = dir.join("stderr.log");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .env("RUST_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sluice");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(marker) => {
                let rest = line.split("://").nth(1).expect("address in start line");
                let addr = rest.split_whitespace().next().unwrap().to_string();
                return Proc { child, addr, log };
            }
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "`sluice {}` did not start: {}",
                    args.join(" "),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }
}

/// A simulated upstream process.
pub fn mock(protocol: &str, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "mock-upstream",
        "--listen",
        "127.0.0.1:0",
        "--protocol",
        protocol,
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    spawn(&args, &[], "listening on")
}

/// A gateway process on `config` (YAML text), listening on a free port.
pub fn gateway(config: &str) -> Proc {
    gateway_env(config, &[])
}

pub fn gateway_env(config: &str, envs: &[(&str, &str)]) -> Proc {
    gateway_on(config, "127.0.0.1:0", envs)
}

/// A gateway process on `config` listening on `listen` (a fixed port: a restarted node keeps its address).
pub fn gateway_on(config: &str, listen: &str, envs: &[(&str, &str)]) -> Proc {
    let dir = tmp_dir();
    let path = dir.join("sluice.yaml");
    std::fs::write(&path, config).unwrap();
    let p = path.to_str().unwrap().to_string();
    spawn(
        &["run", "--config", &p, "--listen", listen],
        envs,
        "sluice listening on",
    )
}

/// The response of a test request.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// One request with a 30 s bound.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).unwrap();
    let fut = async {
        let resp = client().request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("request timed out")
}

/// POST `body` to the Anthropic-style `/v1/messages` with `key` in `x-api-key`.
pub async fn messages(gw: &Proc, key: &str, body: impl Into<String>) -> Resp {
    request(
        "POST",
        &format!("{}/v1/messages", gw.url()),
        &[("x-api-key", key)],
        body.into(),
    )
    .await
}

/// POST `body` to the gateway's OpenAI-style `/v1/chat/completions` with `key` as bearer token.
pub async fn chat(gw: &Proc, key: &str, body: serde_json::Value, extra: &[(&str, &str)]) -> Resp {
    chat_at(&gw.url(), key, body, extra).await
}

/// [`chat`] to the gateway at `base` (`http://ADDR`), for tasks that cannot borrow its [`Proc`].
pub async fn chat_at(
    base: &str,
    key: &str,
    body: serde_json::Value,
    extra: &[(&str, &str)],
) -> Resp {
    let auth = format!("Bearer {key}");
    let mut h = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    h.extend_from_slice(extra);
    let url = format!("{base}/v1/chat/completions");
    request("POST", &url, &h, body.to_string()).await
}

pub fn hello(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

/// A simulated upstream's `/_mock/stats`: `requests`, `in_flight`, `max_in_flight`.
pub async fn mock_stats(m: &Proc) -> serde_json::Value {
    request("GET", &format!("{}/_mock/stats", m.url()), &[], "")
        .await
        .json()
}

/// `/_mock/stats` request count of a simulated upstream.
pub async fn mock_requests(m: &Proc) -> u64 {
    mock_stats(m).await["requests"].as_u64().unwrap()
}

/// Requests a simulated upstream is answering now.
pub async fn mock_in_flight(m: &Proc) -> u64 {
    mock_stats(m).await["in_flight"].as_u64().unwrap()
}

pub async fn mock_control(m: &Proc, v: serde_json::Value) {
    let r = request(
        "POST",
        &format!("{}/_mock/control", m.url()),
        &[("content-type", "application/json")],
        v.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A backend entry for a config.
pub fn backend(name: &str, m: &Proc, protocol: &str, extra: &str) -> String {
    format!(
        "  - {{ name: {name}, url: \"{}\", protocol: {protocol}{extra} }}\n",
        m.url()
    )
}

pub const TENANTS: &str = "tenants:\n  - { id: acme, tier: premium, keys: [sk-acme] }\n  - { id: free, tier: free, keys: [sk-free] }\n";
