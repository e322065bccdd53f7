//! What the shaping tests (`tests/shaping_*.rs`) share: a config with a `shaping:` section, a gateway
//! in front of one simulated upstream, requests sent in the background and timed, waits for the
//! upstream to be busy and for the queues to fill.

use super::{
    Proc, Resp, backend, chat_at, eventually, gateway, gauge, hello, mock, mock_in_flight,
};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A config with the given backend lines, tenant lines and `shaping:` section (flow style).
pub fn config(backends: &str, tenants: &str, shaping: &str) -> String {
    format!("backends:\n{backends}tenants:\n{tenants}routing: {{}}\nshaping: {shaping}\n")
}

/// One tenant without limits, key `sk-acme`.
pub const ACME: &str = "  - { id: acme, keys: [sk-acme] }\n";

/// One finished request: its answer and when it arrived, relative to the test's start.
#[derive(Debug)]
pub struct Done {
    pub tag: String,
    pub resp: Resp,
    pub sent: Duration,
    pub at: Duration,
}

impl Done {
    pub fn status(&self) -> u16 {
        self.resp.status
    }
    pub fn took(&self) -> Duration {
        self.at.saturating_sub(self.sent)
    }
}

/// Every request answered 200.
pub fn assert_all_ok(done: &[Done]) {
    for d in done {
        assert_eq!(d.status(), 200, "{}: {}", d.tag, d.resp.text());
    }
}

/// Completion times of the requests whose tag starts with `prefix`.
pub fn finished<'a>(done: &'a [Done], prefix: &'a str) -> impl Iterator<Item = Duration> + 'a {
    done.iter()
        .filter(move |d| d.tag.starts_with(prefix))
        .map(|d| d.at)
}

/// Send a chat request in the background.
pub fn spawn_chat(
    gw: &Proc,
    key: &str,
    headers: &[(&str, &str)],
    body: Value,
    t0: Instant,
    tag: impl Into<String>,
) -> JoinHandle<Done> {
    let (base, key, tag) = (gw.url(), key.to_string(), tag.into());
    let h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::spawn(async move {
        let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sent = t0.elapsed();
        let resp = chat_at(&base, &key, body, &hs).await;
        Done {
            tag,
            resp,
            sent,
            at: t0.elapsed(),
        }
    })
}

pub async fn join_all(hs: Vec<JoinHandle<Done>>) -> Vec<Done> {
    let mut out = Vec::with_capacity(hs.len());
    for h in hs {
        out.push(h.await.expect("request task"));
    }
    out
}

/// Wait until the gateway reports `n` waiters of `priority` in its queues.
pub async fn queued(gw: &Proc, priority: &str, n: f64, within: Duration) {
    let what = format!("{n} {priority} request(s) queued");
    eventually(within, &what, || async {
        gauge(gw, "sluice_queue_length", &[("priority", priority)]).await == Some(n)
    })
    .await;
}

/// The error message of an OpenAI-shaped error answer.
pub fn message(r: &Resp) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A simulated upstream (`sluice mock-upstream` with `mock_args`) as backend `sim` (its config entry
/// ending in `extra`), and a gateway in front of it for `tenants` with the given `shaping:` section.
pub fn sim_backend(mock_args: &[&str], extra: &str, tenants: &str, shaping: &str) -> (Proc, Proc) {
    let m = mock("openai", "sim", mock_args);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", extra),
        tenants,
        shaping,
    ));
    (m, gw)
}

/// [`sim_backend`] answering in `latency_ms` behind `max_concurrent` slots, for [`ACME`].
pub fn slow_backend(latency_ms: u64, max_concurrent: u32, shaping: &str) -> (Proc, Proc) {
    let latency = latency_ms.to_string();
    let slots = format!(", max_concurrent: {max_concurrent}");
    sim_backend(&["--latency-ms", &latency], &slots, ACME, shaping)
}

/// `n` chat requests for `key` sent together in the background, tagged `r0`, `r1`, ...
pub fn burst(gw: &Proc, key: &str, n: usize, t0: Instant) -> Vec<JoinHandle<Done>> {
    (0..n)
        .map(|i| spawn_chat(gw, key, &[], hello("m"), t0, format!("r{i}")))
        .collect()
}

/// Wait until the simulated upstream `m` is answering `n` requests.
pub async fn upstream_busy(m: &Proc, n: u64) {
    let what = format!("{n} request(s) in flight at the upstream");
    eventually(Duration::from_secs(5), &what, || async {
        mock_in_flight(m).await == n
    })
    .await;
}
