//! Shape end to end (issue #4 "How it is shown"): rate limits that queue instead of answering 429 at
//! once, backend capacity queues, priorities, client deadlines, fairness among tenants, adaptive
//! concurrency limits with shedding, and smoothing. Real gateway and simulated upstream processes on
//! loopback; every wait polls with a deadline. Some tests pin down defects found in Shape (their doc
//! comments say what is expected and why).

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;
use tokio::task::JoinHandle;

/// A config with the given backend lines, tenant lines and `shaping:` section (flow style).
fn config(backends: &str, tenants: &str, shaping: &str) -> String {
    format!("backends:\n{backends}tenants:\n{tenants}routing: {{}}\nshaping: {shaping}\n")
}

const ACME: &str = "  - { id: acme, keys: [sk-acme] }\n";

/// One finished request: its answer and when it arrived, relative to the test's start.
#[derive(Debug)]
struct Done {
    tag: String,
    resp: Resp,
    sent: Duration,
    at: Duration,
}

impl Done {
    fn status(&self) -> u16 {
        self.resp.status
    }
    fn took(&self) -> Duration {
        self.at.saturating_sub(self.sent)
    }
}

/// Every request answered 200.
fn assert_all_ok(done: &[Done]) {
    for d in done {
        assert_eq!(d.status(), 200, "{}: {}", d.tag, d.resp.text());
    }
}

/// Completion times of the requests whose tag starts with `prefix`.
fn finished<'a>(done: &'a [Done], prefix: &'a str) -> impl Iterator<Item = Duration> + 'a {
    done.iter()
        .filter(move |d| d.tag.starts_with(prefix))
        .map(|d| d.at)
}

/// Send a chat request in the background.
fn spawn_chat(
    gw: &Proc,
    key: &str,
    headers: &[(&str, &str)],
    body: Value,
    t0: Instant,
    tag: impl Into<String>,
) -> JoinHandle<Done> {
    let url = format!("{}/v1/chat/completions", gw.url());
    let mut h: Vec<(String, String)> = vec![
        ("authorization".into(), format!("Bearer {key}")),
        ("content-type".into(), "application/json".into()),
    ];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let tag = tag.into();
    tokio::spawn(async move {
        let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sent = t0.elapsed();
        let resp = request("POST", &url, &hs, body.to_string()).await;
        Done {
            tag,
            resp,
            sent,
            at: t0.elapsed(),
        }
    })
}

async fn join_all(hs: Vec<JoinHandle<Done>>) -> Vec<Done> {
    let mut out = Vec::with_capacity(hs.len());
    for h in hs {
        out.push(h.await.expect("request task"));
    }
    out
}

async fn metrics_text(gw: &Proc) -> String {
    request("GET", &format!("{}/metrics", gw.url()), &[], "")
        .await
        .text()
}

/// Sum of the samples of `name` (exact name: `_bucket`/`_count` series are other names) whose labels
/// include every `k="v"` of `labels`; `None` when there is no such sample.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (lbls, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once("} ") {
                Some(x) => x,
                None => continue,
            }
        } else if let Some(v) = rest.strip_prefix(' ') {
            ("", v)
        } else {
            continue;
        };
        let have: Vec<&str> = lbls.split(',').collect();
        if labels
            .iter()
            .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()))
            && let Ok(v) = value.trim().parse::<f64>()
        {
            sum = Some(sum.unwrap_or(0.0) + v);
        }
    }
    sum
}

async fn gauge(gw: &Proc, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric(&metrics_text(gw).await, name, labels)
}

async fn stats(m: &Proc) -> Value {
    request("GET", &format!("{}/_mock/stats", m.url()), &[], "")
        .await
        .json()
}

async fn mock_in_flight(m: &Proc) -> u64 {
    stats(m).await["in_flight"].as_u64().unwrap()
}

/// Wait until the gateway reports `n` waiters of `priority` in its queues.
async fn queued(gw: &Proc, priority: &str, n: f64, within: Duration) {
    let what = format!("{n} {priority} request(s) queued");
    eventually(within, &what, || async {
        gauge(gw, "sluice_queue_length", &[("priority", priority)]).await == Some(n)
    })
    .await;
}

/// Poll `f` every 20 ms until it returns `Some` or `within` passes.
async fn poll<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn secs(v: Option<&str>) -> f64 {
    let v = v.expect("header present");
    v.strip_suffix('s')
        .unwrap_or(v)
        .parse()
        .unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

fn message(r: &Resp) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Rate limits: a wait budget instead of an instant 429.

#[tokio::test]
async fn rate_limited_requests_wait_for_tokens_instead_of_429() {
    let m = mock("openai", "sim", &[]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ""),
        "  - { id: t, keys: [sk-t1], limits: { requests_per_minute: 60, burst: 2 } }\n",
        "{ max_wait_ms: 5000 }",
    ));
    let t0 = Instant::now();
    let hs = (0..4)
        .map(|i| spawn_chat(&gw, "sk-t1", &[], hello("m"), t0, format!("r{i}")))
        .collect();
    let mut done = join_all(hs).await;
    assert_all_ok(&done);
    done.sort_by_key(|d| d.at);
    let at: Vec<f64> = done.iter().map(|d| d.took().as_secs_f64()).collect();
    // Two from the burst at once, then one token per second.
    assert!(at[1] < 0.7, "{at:?}");
    assert!(at[2] >= 0.7, "the third did not wait for a token: {at:?}");
    assert!(at[3] >= 1.6 && at[3] < 4.5, "{at:?}");
    let text = metrics_text(&gw).await;
    let q = metric(
        &text,
        "sluice_limiter_decisions_total",
        &[("tenant", "t"), ("outcome", "queued")],
    );
    assert!(q.is_some_and(|q| q >= 2.0), "{q:?}\n{text}");
    // Token waits show in the queue metrics too.
    let waits = metric(
        &text,
        "sluice_queue_wait_seconds_count",
        &[("priority", "normal")],
    );
    assert!(waits.is_some_and(|w| w >= 2.0), "{waits:?}\n{text}");
    assert_eq!(
        metric(&text, "sluice_queue_length", &[("priority", "normal")]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "sluice_limiter_decisions_total",
            &[("tenant", "t"), ("outcome", "limited")]
        ),
        None
    );
}

#[tokio::test]
async fn without_a_wait_budget_the_rate_limit_answers_429_with_headers() {
    let m = mock("openai", "sim", &[]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ""),
        "  - { id: t, keys: [sk-t1], limits: { requests_per_minute: 60, burst: 2 } }\n",
        "{ max_wait_ms: 0 }",
    ));
    for left in ["1", "0"] {
        let r = chat(&gw, "sk-t1", hello("m"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("60"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(left));
    }
    let t = Instant::now();
    let r = chat(&gw, "sk-t1", hello("m"), &[]).await;
    assert!(t.elapsed() < Duration::from_millis(500), "it waited");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    let reset = secs(r.header("x-ratelimit-reset-requests"));
    assert!(reset > 0.0 && reset <= 2.0, "{reset}");
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            "sluice_limiter_decisions_total",
            &[("tenant", "t"), ("outcome", "limited")]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn token_limit_headers_and_reconciliation_after_the_response() {
    let m = mock("openai", "sim", &[]);
    // 600 tokens a minute: 10 a second come back by refill, far less than a reservation.
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ""),
        "  - { id: t, keys: [sk-t1], limits: { tokens_per_minute: 600 } }\n",
        "{ max_wait_ms: 0 }",
    ));
    let t0 = Instant::now();
    // No max_tokens: the reservation is the prompt estimate + 256.
    let r1 = chat(&gw, "sk-t1", hello("m"), &[]).await;
    assert_eq!(r1.status, 200, "{}", r1.text());
    assert_eq!(r1.header("x-ratelimit-limit-tokens"), Some("600"));
    assert!(secs(r1.header("x-ratelimit-reset-tokens")) > 0.0);
    let rem1: f64 = r1
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    let reserve1 = 600.0 - rem1;
    assert!(
        (257.0..=280.0).contains(&reserve1),
        "reservation {reserve1}: expected prompt estimate + 256"
    );
    let used1 = r1.json()["usage"]["total_tokens"].as_f64().unwrap();
    assert!(used1 < reserve1 - 100.0, "{used1}");
    // max_tokens 40: a reservation 216 smaller. The unused part of the first reservation is back.
    let body = json!({"model": "m", "max_tokens": 40, "messages": [{"role": "user", "content": "hello there"}]});
    let r2 = chat(&gw, "sk-t1", body, &[]).await;
    assert_eq!(r2.status, 200, "{}", r2.text());
    let rem2: f64 = r2
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    let refill = 10.0 * t0.elapsed().as_secs_f64() + 2.0;
    let reconciled = 600.0 - used1 - (reserve1 - 216.0);
    let not_reconciled = rem1 - (reserve1 - 216.0);
    assert!(
        rem2 >= reconciled - 2.0 && rem2 <= reconciled + refill,
        "remaining after the second request {rem2}: reconciled would be {reconciled}, \
         without reconciliation {not_reconciled}"
    );
    // A reservation larger than what is left: 429 with the token headers.
    let big =
        json!({"model": "m", "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]});
    let r3 = chat(&gw, "sk-t1", big, &[]).await;
    assert_eq!(r3.status, 429, "{}", r3.text());
    assert_eq!(r3.header("x-ratelimit-limit-tokens"), Some("600"));
    assert_eq!(r3.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert!(secs(r3.header("x-ratelimit-reset-tokens")) > 0.0);
    assert!(r3.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
}

// ---------------------------------------------------------------------------------------------
// Backend capacity: requests wait for a slot; the backend never sees more than its limit.

#[tokio::test]
async fn backend_capacity_queue_holds_requests_and_caps_in_flight() {
    let m = mock("openai", "slow", &["--latency-ms", "300"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 2"),
        ACME,
        "{ congestion: { codel_target_ms: 60000 } }",
    ));
    let t0 = Instant::now();
    let hs = (0..6)
        .map(|i| spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, format!("r{i}")))
        .collect();
    let done = join_all(hs).await;
    let s = stats(&m).await;
    assert!(
        s["max_in_flight"].as_u64().unwrap() <= 2,
        "backend saw more than max_concurrent: {s}"
    );
    assert_all_ok(&done);
    assert_eq!(s["requests"], 6);
    // They waited for slots: at least three rounds of 300 ms.
    let last = done.iter().map(|d| d.at).max().unwrap();
    assert!(last >= Duration::from_millis(850), "{last:?}");
    let text = metrics_text(&gw).await;
    let waited = metric(
        &text,
        "sluice_queue_wait_seconds_count",
        &[("priority", "normal")],
    );
    assert!(waited.is_some_and(|n| n >= 4.0), "{waited:?}");
}

/// The scenario with the default congestion settings: a burst of 6 requests on a backend with
/// `max_concurrent: 2` and 300 ms answers needs about 600 ms of queuing, far inside `max_wait_ms`
/// (10 s by default). Every request should be served; CoDel's default 50 ms target sheds some instead.
/// (`critical_reserve: 0` so that only the CoDel defaults are in play.)
#[tokio::test]
async fn default_codel_does_not_shed_a_short_burst_queued_for_a_slow_backend() {
    let m = mock("openai", "slow", &["--latency-ms", "300"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 2"),
        ACME,
        "{ congestion: { critical_reserve: 0.0 } }",
    ));
    let t0 = Instant::now();
    let hs = (0..6)
        .map(|i| spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, format!("r{i}")))
        .collect();
    let done = join_all(hs).await;
    assert!(stats(&m).await["max_in_flight"].as_u64().unwrap() <= 2);
    let got: Vec<_> = done
        .iter()
        .map(|d| (d.status(), d.took(), message(&d.resp)))
        .collect();
    assert!(
        done.iter().all(|d| d.status() == 200),
        "requests shed although they would have been served within ~600 ms: {got:?}"
    );
}

/// With `max_concurrent: 2` and the default `critical_reserve: 0.1`, ordinary traffic should still get
/// both slots: a tenth of 2 slots should round to no reserved slot, not up to one (that reserves 50% of
/// the backend, five times the configured share). 6 requests of 300 ms take three rounds, not six.
#[tokio::test]
async fn small_max_concurrent_is_not_halved_by_the_critical_reserve() {
    let m = mock("openai", "slow", &["--latency-ms", "300"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 2"),
        ACME,
        "{ congestion: { codel_target_ms: 60000 } }",
    ));
    let t0 = Instant::now();
    let hs = (0..6)
        .map(|i| spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, format!("r{i}")))
        .collect();
    let done = join_all(hs).await;
    assert!(done.iter().all(|d| d.status() == 200));
    let s = stats(&m).await;
    let last = done.iter().map(|d| d.at).max().unwrap();
    assert!(
        last < Duration::from_millis(1400),
        "6 requests of 300 ms on 2 slots took {last:?}: normal traffic used one slot ({s})"
    );
    assert_eq!(s["max_in_flight"], 2, "{s}");
}

/// The slot check and the slot taking must be one atomic step: requests arriving together must not all
/// see a free slot and all start. Bursts of 24 on `max_concurrent: 2` over kept-alive connections (so
/// they arrive as close together as possible), several times.
#[tokio::test]
async fn max_concurrent_holds_when_requests_arrive_together() {
    use http_body_util::BodyExt;
    let m = mock("openai", "slow", &["--latency-ms", "50"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 2"),
        ACME,
        "{ max_wait_ms: 30000, congestion: { critical_reserve: 0.0, codel_target_ms: 60000 } }",
    ));
    let client = client();
    let url = format!("{}/v1/chat/completions", gw.url());
    let mut worst = 0;
    for round in 0..6 {
        let r = request("POST", &format!("{}/_mock/reset", m.url()), &[], "").await;
        assert_eq!(r.status, 200);
        let hs: Vec<_> = (0..24)
            .map(|_| {
                let req = http::Request::post(&url)
                    .header("authorization", "Bearer sk-acme")
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        hello("m").to_string(),
                    )))
                    .unwrap();
                let c = client.clone();
                tokio::spawn(async move {
                    let resp = c.request(req).await.expect("request");
                    let status = resp.status().as_u16();
                    resp.into_body().collect().await.expect("body");
                    status
                })
            })
            .collect();
        for h in hs {
            let status = tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("burst finished")
                .unwrap();
            assert_eq!(status, 200);
        }
        let s = stats(&m).await;
        let max = s["max_in_flight"].as_u64().unwrap();
        worst = worst.max(max);
        assert!(
            max <= 2,
            "round {round}: the backend saw {max} at once with max_concurrent: 2: {s}"
        );
    }
    println!("worst max_in_flight: {worst}");
}

// ---------------------------------------------------------------------------------------------
// Priority: queued critical requests go before queued batch requests.

#[tokio::test]
async fn critical_requests_are_served_before_queued_batch_requests() {
    let m = mock("openai", "slow", &["--latency-ms", "800"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 1"),
        ACME,
        "{ priority: { header_can_raise: true }, congestion: { codel_target_ms: 60000 } }",
    ));
    let t0 = Instant::now();
    let filler = spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, "filler");
    eventually(Duration::from_secs(5), "backend busy", || async {
        mock_in_flight(&m).await == 1
    })
    .await;
    let mut hs = Vec::new();
    for i in 0..3 {
        let h = [("x-priority", "batch")];
        hs.push(spawn_chat(
            &gw,
            "sk-acme",
            &h,
            hello("m"),
            t0,
            format!("batch{i}"),
        ));
    }
    queued(&gw, "batch", 3.0, Duration::from_millis(600)).await;
    for i in 0..2 {
        let h = [("x-priority", "critical")];
        hs.push(spawn_chat(
            &gw,
            "sk-acme",
            &h,
            hello("m"),
            t0,
            format!("critical{i}"),
        ));
    }
    queued(&gw, "critical", 2.0, Duration::from_millis(600)).await;
    let filler = filler.await.unwrap();
    assert_eq!(filler.status(), 200);
    let done = join_all(hs).await;
    assert_all_ok(&done);
    let last_critical = finished(&done, "critical").max().unwrap();
    let first_batch = finished(&done, "batch").min().unwrap();
    let order: Vec<_> = done.iter().map(|d| (&d.tag, d.at)).collect();
    assert!(
        last_critical < first_batch,
        "critical requests were not served first: {order:?}"
    );
    // Served one at a time: the backend never had two at once.
    assert_eq!(stats(&m).await["max_in_flight"], 1);
}

// ---------------------------------------------------------------------------------------------
// Client deadlines.

#[tokio::test]
async fn a_deadline_that_passes_in_the_queue_gives_504_and_never_reaches_the_upstream() {
    let m = mock("openai", "slow", &["--latency-ms", "1500"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 1"),
        ACME,
        "{ congestion: { codel_target_ms: 60000 } }",
    ));
    let t0 = Instant::now();
    let filler = spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, "filler");
    eventually(Duration::from_secs(5), "backend busy", || async {
        mock_in_flight(&m).await == 1
    })
    .await;
    let t = Instant::now();
    let r = chat(&gw, "sk-acme", hello("m"), &[("x-request-deadline", "200")]).await;
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    let msg = message(&r);
    assert!(msg.contains("deadline"), "{msg}");
    assert_eq!(r.json()["error"]["code"], "deadline_expired");
    assert_eq!(filler.await.unwrap().status(), 200);
    let s = stats(&m).await;
    assert_eq!(
        s["requests"], 1,
        "the expired request reached the upstream: {s}"
    );
    let text = metrics_text(&gw).await;
    assert!(
        metric(&text, "sluice_shed_total", &[("reason", "deadline")]).is_some_and(|v| v >= 1.0),
        "{text}"
    );

    // A malformed deadline is the client's error.
    for bad in ["soon", "0", "-5", "1.5"] {
        let r = chat(&gw, "sk-acme", hello("m"), &[("x-request-deadline", bad)]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        let msg = message(&r);
        assert!(msg.contains("x-request-deadline"), "{msg}");
    }
    assert_eq!(stats(&m).await["requests"], 1);
    // A generous deadline is served.
    let r = chat(
        &gw,
        "sk-acme",
        hello("m"),
        &[("x-request-deadline", "10000")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A client deadline shorter than the upstream's answer time is the client's choice, not a backend
/// failure: a handful of impatient requests must not eject a healthy backend for everyone else (nor
/// shrink its concurrency limit).
#[tokio::test]
async fn client_deadline_timeouts_do_not_eject_a_healthy_backend() {
    let m = mock("openai", "slow", &["--latency-ms", "300"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", eject_after: 3"),
        ACME,
        "{}",
    ));
    for _ in 0..3 {
        let r = chat(&gw, "sk-acme", hello("m"), &[("x-request-deadline", "50")]).await;
        assert_eq!(r.status, 504, "{}", r.text());
    }
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    let text = metrics_text(&gw).await;
    assert_eq!(
        r.status,
        200,
        "a request without deadline after three impatient ones: {}\nejections: {:?}",
        r.text(),
        metric(&text, "sluice_backend_ejections_total", &[])
    );
    assert_eq!(
        metric(
            &text,
            "sluice_backend_concurrency_limit",
            &[("backend", "sim")]
        ),
        Some(32.0),
        "client deadlines shrank the concurrency limit"
    );
}

// ---------------------------------------------------------------------------------------------
// Fairness among tenants.

#[tokio::test]
async fn a_quiet_tenant_is_not_starved_by_a_noisy_one() {
    let m = mock("openai", "slow", &["--latency-ms", "100"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 1"),
        "  - { id: noisy, keys: [sk-noisy], weight: 1 }\n  - { id: quiet, keys: [sk-quiet], weight: 1 }\n",
        "{ congestion: { codel_target_ms: 60000 } }",
    ));
    let t0 = Instant::now();
    let mut hs: Vec<_> = (0..30)
        .map(|i| spawn_chat(&gw, "sk-noisy", &[], hello("m"), t0, format!("a{i}")))
        .collect();
    // The noisy tenant's backlog is in the queue before the quiet one shows up.
    eventually(Duration::from_secs(5), "noisy backlog queued", || async {
        gauge(&gw, "sluice_queue_length", &[("priority", "normal")])
            .await
            .is_some_and(|n| n >= 25.0)
    })
    .await;
    for i in 0..3 {
        hs.push(spawn_chat(
            &gw,
            "sk-quiet",
            &[],
            hello("m"),
            t0,
            format!("b{i}"),
        ));
    }
    let done = join_all(hs).await;
    assert_all_ok(&done);
    let quiet_last = finished(&done, "b").max().unwrap();
    let noisy_after = done
        .iter()
        .filter(|d| d.tag.starts_with('a') && d.at > quiet_last)
        .count();
    let noisy_last = finished(&done, "a").max().unwrap();
    assert!(
        noisy_after >= 15,
        "the quiet tenant finished at {quiet_last:?}, only {noisy_after} noisy requests after it \
         (noisy last at {noisy_last:?})"
    );
    let quiet_took = done
        .iter()
        .filter(|d| d.tag.starts_with('b'))
        .map(Done::took)
        .max()
        .unwrap();
    assert!(
        quiet_took < Duration::from_millis(1500),
        "quiet requests waited {quiet_took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Congestion control: the adaptive limit, shedding under overload.

/// Closed-loop workers sending until `stop`; returns the statuses they saw.
fn load(
    gw: &Proc,
    key: &'static str,
    priority: &'static str,
    workers: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<JoinHandle<Vec<u16>>> {
    (0..workers)
        .map(|_| {
            let url = format!("{}/v1/chat/completions", gw.url());
            let stop = stop.clone();
            let auth = format!("Bearer {key}");
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let h = [
                        ("authorization", auth.as_str()),
                        ("content-type", "application/json"),
                        ("x-priority", priority),
                    ];
                    let r = request("POST", &url, &h, hello("m").to_string()).await;
                    seen.push(r.status);
                }
                seen
            })
        })
        .collect()
}

async fn stop_load(
    stop: &std::sync::atomic::AtomicBool,
    hs: Vec<JoinHandle<Vec<u16>>>,
) -> Vec<u16> {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for h in hs {
        all.extend(h.await.unwrap());
    }
    all
}

async fn limit(gw: &Proc) -> f64 {
    gauge(
        gw,
        "sluice_backend_concurrency_limit",
        &[("backend", "sim")],
    )
    .await
    .unwrap_or(-1.0)
}

#[tokio::test]
async fn concurrency_limit_shrinks_when_the_backend_slows_and_fails_then_recovers() {
    let m = mock("openai", "sim", &["--latency-ms", "20"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", eject_after: 100000"),
        ACME,
        "{ congestion: { initial_limit: 8, min_limit: 2, max_limit: 64, codel_target_ms: 60000 } }",
    ));
    assert_eq!(limit(&gw).await, 8.0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = load(&gw, "sk-acme", "normal", 16, stop.clone());
    eventually(Duration::from_secs(10), "baseline traffic", || async {
        mock_requests(&m).await >= 60
    })
    .await;
    let healthy = limit(&gw).await;
    assert!(healthy >= 8.0, "{healthy}");

    mock_control(&m, json!({"latency_ms": 300, "error_rate": 0.3})).await;
    let low = poll(Duration::from_secs(20), "limit shrinks", || async {
        let l = limit(&gw).await;
        (l <= 4.0).then_some(l)
    })
    .await;

    mock_control(&m, json!({"latency_ms": 20, "error_rate": 0.0})).await;
    let back = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let l = limit(&gw).await;
        if seen.last() != Some(&l) {
            seen.push(l);
        }
        if l >= 8.0 {
            break;
        }
        assert!(
            Instant::now() < back,
            "the limit did not recover once the backend was fast again: {seen:?}; backend {}",
            stats(&m).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = stop_load(&stop, workers).await;
    assert!(seen.iter().filter(|s| **s == 200).count() > 60);
    println!("limit: healthy {healthy}, shrank to {low}, recovered");
}

#[tokio::test]
async fn critical_requests_keep_flowing_while_batch_is_shed() {
    let m = mock("openai", "slow", &["--latency-ms", "200"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 4"),
        ACME,
        "{ max_queue: 4, priority: { header_can_raise: true }, \
         congestion: { codel_target_ms: 50, codel_interval_ms: 200 } }",
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let batch = load(&gw, "sk-acme", "batch", 16, stop.clone());
    eventually(Duration::from_secs(10), "batch shed", || async {
        gauge(&gw, "sluice_shed_total", &[("priority", "batch")])
            .await
            .is_some()
    })
    .await;
    let mut took = Vec::new();
    for _ in 0..8 {
        let t = Instant::now();
        let r = chat(&gw, "sk-acme", hello("m"), &[("x-priority", "critical")]).await;
        took.push(t.elapsed());
        assert_eq!(r.status, 200, "critical request refused: {}", r.text());
    }
    let statuses = stop_load(&stop, batch).await;
    let shed = statuses.iter().filter(|s| **s == 503).count();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(shed > 0 && ok > 0, "batch: {ok} ok, {shed} shed");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let max = took.iter().max().unwrap();
    assert!(
        *max < Duration::from_millis(1000),
        "critical latencies under overload: {took:?}"
    );
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(&text, "sluice_shed_total", &[("priority", "critical")]),
        None,
        "{text}"
    );
    assert!(metric(&text, "sluice_shed_total", &[("priority", "batch")]).unwrap() >= 1.0);
    assert!(stats(&m).await["max_in_flight"].as_u64().unwrap() <= 4);
}

/// CoDel must see the queue's delay, not the delay of whoever is at the head in priority order: a
/// trickle of critical requests (well under capacity) puts a fresh waiter at the head every 200 ms, and
/// each fresh head resets the CoDel state, so a congested batch backlog is never shed by CoDel. The same
/// batch overload without the critical trickle is shed (phase A) — with it, it must be too (phase B).
#[tokio::test]
async fn codel_keeps_shedding_congested_batch_work_while_critical_requests_trickle_in() {
    let shaping = "{ max_wait_ms: 20000, priority: { header_can_raise: true }, \
                   congestion: { critical_reserve: 0.0, codel_target_ms: 50, codel_interval_ms: 300 } }";
    let congested = |text: &str| {
        metric(
            text,
            "sluice_shed_total",
            &[("reason", "congested"), ("priority", "batch")],
        )
        .unwrap_or(0.0)
    };
    let mean_wait = |text: &str| {
        let l = [("priority", "batch")];
        metric(text, "sluice_queue_wait_seconds_sum", &l).unwrap_or(0.0)
            / metric(text, "sluice_queue_wait_seconds_count", &l).unwrap_or(1.0)
    };
    // 2 slots of 200 ms: 10 requests/s. 8 closed-loop batch workers keep ~6 waiting.
    let run = |critical: bool| async move {
        let m = mock("openai", "slow", &["--latency-ms", "200"]);
        let gw = gateway(&config(
            &backend("sim", &m, "openai", ", max_concurrent: 2"),
            ACME,
            shaping,
        ));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let batch = load(&gw, "sk-acme", "batch", 8, stop.clone());
        let t0 = Instant::now();
        let mut crit = Vec::new();
        // Open loop: one critical request every 200 ms (5/s, half the capacity) for 3 s.
        let mut every = tokio::time::interval(Duration::from_millis(200));
        while t0.elapsed() < Duration::from_secs(3) {
            every.tick().await;
            if critical {
                let h = [("x-priority", "critical")];
                crit.push(spawn_chat(&gw, "sk-acme", &h, hello("m"), t0, "c"));
            }
        }
        stop_load(&stop, batch).await;
        for d in join_all(crit).await {
            assert_eq!(d.status(), 200, "critical: {}", d.resp.text());
        }
        metrics_text(&gw).await
    };
    let a = run(false).await;
    let b = run(true).await;
    let (shed_a, shed_b) = (congested(&a), congested(&b));
    let (wait_a, wait_b) = (mean_wait(&a), mean_wait(&b));
    println!(
        "congested sheds: alone {shed_a}, with critical {shed_b}; mean batch wait {wait_a:.3} s vs {wait_b:.3} s"
    );
    assert!(shed_a >= 1.0, "batch overload alone is not shed: {a}");
    // Half the capacity goes to critical work in phase B, so its batch backlog is at least as congested.
    assert!(
        shed_b >= shed_a / 2.0,
        "with critical requests trickling in, CoDel shed {shed_b} batch requests \
         (without: {shed_a}); mean batch queue wait {wait_b:.3} s (without: {wait_a:.3} s)"
    );
}

// ---------------------------------------------------------------------------------------------
// Smoothing.

#[tokio::test]
async fn smoothing_spreads_a_burst_over_time_at_the_backend() {
    let m = mock("openai", "sim", &[]);
    let gw = gateway(&config(
        &backend(
            "sim",
            &m,
            "openai",
            ", smoothing: { rate_per_sec: 10, burst: 1 }",
        ),
        ACME,
        "{}",
    ));
    let t0 = Instant::now();
    let hs = (0..5)
        .map(|i| spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, format!("r{i}")))
        .collect();
    // Watch the upstream's request counter while the burst goes through.
    let mut seen: Vec<(u64, Duration)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = mock_requests(&m).await;
        if seen.last().is_none_or(|(last, _)| *last != n) {
            seen.push((n, t0.elapsed()));
        }
        if n >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the burst never arrived: {seen:?}"
        );
    }
    let done = join_all(hs).await;
    assert!(done.iter().all(|d| d.status() == 200));
    let first = seen.iter().find(|(n, _)| *n >= 1).unwrap().1;
    let all = seen.iter().find(|(n, _)| *n >= 5).unwrap().1;
    assert!(
        seen.iter().any(|(n, _)| (1..5).contains(n)),
        "the upstream saw the burst at once: {seen:?}"
    );
    assert!(
        all - first >= Duration::from_millis(300),
        "arrivals at the upstream: {seen:?}"
    );
    let mut at: Vec<Duration> = done.iter().map(|d| d.at).collect();
    at.sort();
    assert!(
        at[4] - at[0] >= Duration::from_millis(350),
        "responses: {at:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics.

#[tokio::test]
async fn shaping_metrics_are_exported() {
    let m = mock("openai", "slow", &["--latency-ms", "400"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 1"),
        "  - { id: acme, keys: [sk-acme] }\n  - { id: t, keys: [sk-t1], limits: { requests_per_minute: 600, burst: 1 } }\n",
        "{ congestion: { codel_target_ms: 60000 } }",
    ));
    let text = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &text,
            "sluice_backend_concurrency_limit",
            &[("backend", "sim")]
        ),
        Some(1.0),
        "{text}"
    );
    let t0 = Instant::now();
    // Rate-limited tenant: the second request waits ~100 ms for a token.
    let a = spawn_chat(&gw, "sk-t1", &[], hello("m"), t0, "t0");
    let b = spawn_chat(&gw, "sk-t1", &[], hello("m"), t0, "t1");
    // One queued for the backend, one shed by its deadline.
    eventually(Duration::from_secs(5), "backend busy", || async {
        mock_in_flight(&m).await >= 1
    })
    .await;
    let c = spawn_chat(
        &gw,
        "sk-acme",
        &[("x-request-deadline", "100")],
        hello("m"),
        t0,
        "c",
    );
    for d in join_all(vec![a, b, c]).await {
        assert!(
            [200, 504].contains(&d.status()),
            "{}: {}",
            d.tag,
            d.resp.text()
        );
    }
    let text = metrics_text(&gw).await;
    for (name, labels) in [
        ("sluice_queue_length", vec![("priority", "normal")]),
        (
            "sluice_queue_wait_seconds_count",
            vec![("priority", "normal")],
        ),
        (
            "sluice_queue_wait_seconds_bucket",
            vec![("priority", "normal")],
        ),
        (
            "sluice_shed_total",
            vec![("reason", "deadline"), ("priority", "normal")],
        ),
        ("sluice_backend_concurrency_limit", vec![("backend", "sim")]),
        (
            "sluice_limiter_decisions_total",
            vec![("tenant", "t"), ("outcome", "queued")],
        ),
        (
            "sluice_limiter_decisions_total",
            vec![("tenant", "t"), ("outcome", "allowed")],
        ),
    ] {
        assert!(
            metric(&text, name, &labels).is_some(),
            "missing {name}{labels:?} in\n{text}"
        );
    }
}

/// Queues belong to routes; the gauge is per priority class only, so it must add up every route's
/// waiters rather than show whichever queue changed last.
#[tokio::test]
async fn queue_length_gauge_counts_the_waiters_of_every_route() {
    let m = mock("openai", "slow", &["--latency-ms", "2000"]);
    let cfg = format!(
        "backends:\n{}{}tenants:\n{ACME}routing:\n  rules:\n    \
         - {{ name: one, match: {{ headers: {{ x-route: one }} }}, route: {{ backend: a }} }}\n    \
         - {{ name: two, match: {{ headers: {{ x-route: two }} }}, route: {{ backend: b }} }}\n\
         shaping: {{ congestion: {{ codel_target_ms: 60000 }} }}\n",
        backend("a", &m, "openai", ", max_concurrent: 1"),
        backend("b", &m, "openai", ", max_concurrent: 1"),
    );
    let gw = gateway(&cfg);
    let t0 = Instant::now();
    let mut hs = vec![
        spawn_chat(
            &gw,
            "sk-acme",
            &[("x-route", "one")],
            hello("m"),
            t0,
            "fill-a",
        ),
        spawn_chat(
            &gw,
            "sk-acme",
            &[("x-route", "two")],
            hello("m"),
            t0,
            "fill-b",
        ),
    ];
    eventually(Duration::from_secs(5), "both backends busy", || async {
        mock_in_flight(&m).await == 2
    })
    .await;
    for (i, route) in ["one", "one", "two"].into_iter().enumerate() {
        hs.push(spawn_chat(
            &gw,
            "sk-acme",
            &[("x-route", route)],
            hello("m"),
            t0,
            format!("q{i}"),
        ));
    }
    let mut last = None;
    let deadline = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < deadline && last != Some(3.0) {
        last = gauge(&gw, "sluice_queue_length", &[("priority", "normal")]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        last,
        Some(3.0),
        "three requests wait (two on route one, one on route two)"
    );
    assert_all_ok(&join_all(hs).await);
}

/// One queue per route: a request that only an idle backend of the pool can serve (another model)
/// must not wait behind requests for a full backend.
#[tokio::test]
async fn a_request_for_an_idle_backend_does_not_wait_behind_a_full_one() {
    let busy = mock("openai", "busy", &["--latency-ms", "2000"]);
    let idle = mock("openai", "idle", &[]);
    let backends = format!(
        "{}{}",
        backend(
            "busy",
            &busy,
            "openai",
            ", max_concurrent: 1, models: { fast: fast }"
        ),
        backend("idle", &idle, "openai", ", models: { smart: smart }"),
    );
    let gw = gateway(&config(
        &backends,
        ACME,
        "{ congestion: { codel_target_ms: 60000 } }",
    ));
    let t0 = Instant::now();
    let fill = spawn_chat(&gw, "sk-acme", &[], hello("fast"), t0, "fill");
    eventually(Duration::from_secs(5), "busy backend full", || async {
        mock_in_flight(&busy).await == 1
    })
    .await;
    let waiting = spawn_chat(&gw, "sk-acme", &[], hello("fast"), t0, "waiting");
    queued(&gw, "normal", 1.0, Duration::from_millis(800)).await;
    let t = Instant::now();
    let r = chat(&gw, "sk-acme", hello("smart"), &[]).await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-backend"), Some("idle"));
    assert!(
        took < Duration::from_millis(1000),
        "a request for the idle backend waited {took:?} behind the full one"
    );
    assert_eq!(fill.await.unwrap().status(), 200);
    assert_eq!(waiting.await.unwrap().status(), 200);
}
