//! Rate limits that wait: a request over its tenant's rate waits for a token within the wait budget
//! instead of an instant 429; without a budget, a 429 with the rate-limit headers; token limits
//! reserve an estimate and reconcile it with the actual usage. Real gateway and simulated upstream
//! processes on loopback; every wait polls with a deadline.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::shaping::*;
use support::*;

fn secs(v: Option<&str>) -> f64 {
    let v = v.expect("header present");
    v.strip_suffix('s')
        .unwrap_or(v)
        .parse()
        .unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

#[tokio::test]
async fn rate_limited_requests_wait_for_tokens_instead_of_429() {
    let (_m, gw) = sim_backend(
        &[],
        "",
        "  - { id: t, keys: [sk-t1], limits: { requests_per_minute: 60, burst: 2 } }\n",
        "{ max_wait_ms: 5000 }",
    );
    let t0 = Instant::now();
    let hs = burst(&gw, "sk-t1", 4, t0);
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
    let (_m, gw) = sim_backend(
        &[],
        "",
        "  - { id: t, keys: [sk-t1], limits: { requests_per_minute: 60, burst: 2 } }\n",
        "{ max_wait_ms: 0 }",
    );
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
    // 600 tokens a minute: 10 a second come back by refill, far less than a reservation.
    let (_m, gw) = sim_backend(
        &[],
        "",
        "  - { id: t, keys: [sk-t1], limits: { tokens_per_minute: 600 } }\n",
        "{ max_wait_ms: 0 }",
    );
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
