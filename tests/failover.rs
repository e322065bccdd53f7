//! Failover, passive ejection, active health checks and recovery, 429 cooldowns, all backends down.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

/// An address nothing listens on.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn connect_errors_and_5xx_fail_over_without_the_client_noticing() {
    let good = mock("openai", "good", &[]);
    let broken = mock("openai", "broken", &["--error-rate", "1.0"]);
    let cfg = format!(
        "backends:\n  - {{ name: dead, url: \"{}\", protocol: openai, eject_after: 100 }}\n{}{}{TENANTS}routing:\n  strategy: round-robin\n  max_attempts: 3\n",
        dead_url(),
        backend("broken", &broken, "openai", ", eject_after: 100"),
        backend("good", &good, "openai", "")
    );
    let gw = gateway(&cfg);
    for _ in 0..12 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-sluice-backend"), Some("good"));
    }
    let metrics = metrics_text(&gw).await;
    for (backend, reason) in [("dead", "connect"), ("broken", "5xx")] {
        let labels = [("backend", backend), ("reason", reason)];
        assert!(
            metric(&metrics, "sluice_failovers_total", &labels).is_some_and(|n| n >= 1.0),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn passive_ejection_then_active_probe_recovery() {
    let a = mock("openai", "a", &[]);
    let b = mock("openai", "b", &[]);
    let hc = ", eject_after: 2, eject_for_ms: 60000, health_check: { path: /health, interval_ms: 100, unhealthy_threshold: 1, healthy_threshold: 1 }";
    let cfg = format!(
        "backends:\n{}{}{TENANTS}routing:\n  strategy: round-robin\n",
        backend("a", &a, "openai", hc),
        backend("b", &b, "openai", hc)
    );
    let gw = gateway(&cfg);
    // `a` starts failing its health checks: within a few probes nothing goes there.
    mock_control(&a, serde_json::json!({"healthy": false})).await;
    eventually(Duration::from_secs(5), "a marked unhealthy", || async {
        gauge(&gw, "sluice_backend_healthy", &[("backend", "a")]).await == Some(0.0)
    })
    .await;
    let before = mock_requests(&a).await;
    for _ in 0..10 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-sluice-backend"), Some("b"));
    }
    assert_eq!(mock_requests(&a).await, before);
    // It recovers: traffic returns.
    mock_control(&a, serde_json::json!({"healthy": true})).await;
    eventually(Duration::from_secs(5), "a back in rotation", || async {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        r.header("x-sluice-backend") == Some("a")
    })
    .await;
}

#[tokio::test]
async fn upstream_429_with_retry_after_becomes_a_cooldown() {
    // One request per 10 s: the second answer is a 429 with Retry-After.
    let limited = mock(
        "openai",
        "limited",
        &["--rate-limit-rps", "0.1", "--no-rate-limit-headers"],
    );
    let other = mock("openai", "other", &[]);
    let cfg = format!(
        "backends:\n{}{}{TENANTS}routing:\n  strategy: round-robin\n",
        backend("limited", &limited, "openai", ""),
        backend("other", &other, "openai", "")
    );
    let gw = gateway(&cfg);
    for _ in 0..10 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // One success and one 429 at most: then the cooldown keeps it out.
    assert!(mock_requests(&limited).await <= 2);
    let m = metrics_text(&gw).await;
    let labels = [("backend", "limited"), ("reason", "rate_limited")];
    assert_eq!(
        metric(&m, "sluice_failovers_total", &labels),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn all_backends_down_is_a_clear_503() {
    let cfg = format!(
        "backends:\n  - {{ name: d1, url: \"{}\", protocol: openai, eject_after: 1 }}\n  - {{ name: d2, url: \"{}\", protocol: openai, eject_after: 1 }}\n{TENANTS}routing: {{}}\n",
        dead_url(),
        dead_url()
    );
    let gw = gateway(&cfg);
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        r.text()
    );
    // Both are ejected now: the answer says so without trying.
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no healthy backend"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        request("GET", &format!("{}/readyz", gw.url()), &[], "")
            .await
            .status,
        503
    );
}

#[tokio::test]
async fn when_every_backend_is_cooling_down_the_request_waits_or_gets_429() {
    // Each upstream takes one request per second: the second answer is a 429 with Retry-After: 1.
    // No rate-limit headers: Sluice learns the limit only from the 429s (see tests/quota.rs).
    let quiet = ["--rate-limit-rps", "1", "--no-rate-limit-headers"];
    let a = mock("openai", "a", &quiet);
    let b = mock("openai", "b", &quiet);
    let pool = format!(
        "backends:\n{}{}{TENANTS}routing:\n  strategy: round-robin\n",
        backend("a", &a, "openai", ""),
        backend("b", &b, "openai", "")
    );
    // No waiting allowed: once both cool down, a clear 429 with Retry-After (not a 503 "unhealthy").
    let gw = gateway(&format!("{pool}shaping: {{ max_wait_ms: 0 }}\n"));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert!(r.header("retry-after").is_some(), "{}", r.text());
            let code = r.json()["error"]["code"].clone();
            assert!(
                code == "upstream_rate_limited" || code.is_null(),
                "{}",
                r.text()
            );
        }
    }
    assert!(!statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let ok_without_waiting = statuses.iter().filter(|s| **s == 200).count();
    let first = statuses;
    // With room to wait, a request that finds every backend cooling down waits for the first to
    // come back and succeeds. (The one that ran into both 429s has used its attempts: it gets the
    // upstream's 429 with Retry-After.)
    let gw = gateway(&format!("{pool}shaping: {{ max_wait_ms: 3000 }}\n"));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
        }
        statuses.push(r.status);
    }
    let ok_waiting = statuses.iter().filter(|s| **s == 200).count();
    assert!(!statuses.contains(&503), "{statuses:?}");
    assert!(
        ok_waiting > ok_without_waiting,
        "waiting {statuses:?} vs not waiting {first:?}"
    );
}

#[tokio::test]
async fn pooled_connections_to_a_restarted_upstream_are_replaced_without_errors() {
    let mut m = mock("openai", "first", &[]);
    let addr = m.addr.clone();
    let gw = gateway(&format!(
        "backends:\n{}{TENANTS}routing: {{}}\n",
        backend("up", &m, "openai", ", eject_after: 1")
    ));
    for _ in 0..4 {
        assert_eq!(chat(&gw, "sk-acme", hello("m"), &[]).await.status, 200);
    }
    // The upstream restarts on the same address: every pooled keep-alive connection is now dead.
    m.kill();
    let _m2 = spawn(
        &[
            "mock-upstream",
            "--listen",
            &addr,
            "--protocol",
            "openai",
            "--name",
            "second",
        ],
        &[],
        "listening on",
    );
    for _ in 0..4 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .contains("second")
        );
    }
}

#[tokio::test]
async fn an_upstream_503_with_retry_after_is_a_cooldown_too() {
    let down = mock("openai", "down", &[]);
    let other = mock("openai", "other", &[]);
    mock_control(&down, json!({"status": 503, "retry_after_s": 30})).await;
    let cfg = format!(
        "backends:\n{}{}{TENANTS}routing:\n  strategy: round-robin\n",
        backend("down", &down, "openai", ""),
        backend("other", &other, "openai", "")
    );
    let gw = gateway(&cfg);
    for _ in 0..10 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(mock_requests(&down).await, 1, "cooling down after its 503");
    let m = metrics_text(&gw).await;
    let labels = [("backend", "down"), ("reason", "5xx")];
    assert_eq!(metric(&m, "sluice_failovers_total", &labels), Some(1.0));
}

#[tokio::test]
async fn with_one_attempt_the_request_after_a_429_waits_out_the_cooldown_and_is_served() {
    let m = mock("openai", "limited", &[]);
    let cfg = format!(
        "backends:\n{}{TENANTS}routing:\n  max_attempts: 1\n",
        backend("limited", &m, "openai", "")
    );
    let gw = gateway(&cfg);
    mock_control(&m, json!({"status": 429, "retry_after_s": 1})).await;
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    mock_control(&m, json!({"status": null})).await;
    // The backend is cooling down for 1 s: the next request waits for it (within max_wait) and is
    // served, rather than getting 503 because the wait used up its one attempt.
    let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Issue #15: an ejected backend without a health check is probed (`GET /v1/models`) every
/// `eject_probe_ms` (default 1 s) and routed to again within twice that once it answers, not when
/// its 60 s ejection ends.
#[tokio::test]
async fn an_ejected_backend_is_probed_back_within_twice_the_probe_interval() {
    const PROBE: Duration = Duration::from_secs(1); // the default eject_probe_ms
    let a = mock("openai", "a", &[]);
    let b = mock("openai", "b", &[]);
    let cfg = format!(
        "backends:\n{}{}{TENANTS}routing:\n  strategy: round-robin\n",
        backend("a", &a, "openai", ", eject_after: 2, eject_for_ms: 60000"),
        backend("b", &b, "openai", "")
    );
    let gw = gateway(&cfg);
    // `a` fails every request (and every probe) until it is ejected; clients never notice.
    mock_control(&a, json!({"status": 500})).await;
    let ejections = [("backend", "a")];
    poll(Duration::from_secs(10), "a ejected", || async {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let m = metrics_text(&gw).await;
        metric(&m, "sluice_backend_ejections_total", &ejections).map(|_| ())
    })
    .await;
    // Probes go on failing: it stays out.
    let failed = [("backend", "a"), ("result", "failed")];
    eventually(Duration::from_secs(5), "a failed probe", || async {
        let m = metrics_text(&gw).await;
        metric(&m, "sluice_backend_probe_backs_total", &failed).is_some_and(|n| n >= 1.0)
    })
    .await;
    for _ in 0..4 {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.header("x-sluice-backend"), Some("b"), "{}", r.text());
    }
    // It comes back: routed to again within twice the probe interval.
    mock_control(&a, json!({"status": null})).await;
    let back = std::time::Instant::now();
    let took = poll(2 * PROBE, "a routed to again", || async {
        let r = chat(&gw, "sk-acme", hello("m"), &[]).await;
        (r.header("x-sluice-backend") == Some("a")).then(|| back.elapsed())
    })
    .await;
    eprintln!("ejected backend routed to again {took:?} after it recovered");
    let m = metrics_text(&gw).await;
    let ok = [("backend", "a"), ("result", "ok")];
    assert_eq!(
        metric(&m, "sluice_backend_probe_backs_total", &ok),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "sluice_backend_ejections_total", &ejections),
        Some(1.0)
    );
}

/// Issue #12: requests already queued for a slot when the only backend starts cooling down (an
/// upstream 429 with a long Retry-After) get a 429 with when to come back at once, not Sluice's own
/// 503 after waiting out their queue budget.
#[tokio::test]
async fn queued_requests_get_a_prompt_429_when_every_backend_starts_cooling_down() {
    let m = mock("openai", "one", &[]);
    let cfg = format!(
        "backends:\n{}{TENANTS}routing:\n  max_attempts: 1\nshaping: {{ max_wait_ms: 10000 }}\n",
        backend("one", &m, "openai", ", max_concurrent: 1")
    );
    let gw = gateway(&cfg);
    // The one slot's answer takes 800 ms and is a 429 with Retry-After: 30.
    mock_control(
        &m,
        json!({"latency_ms": 800, "status": 429, "retry_after_s": 30}),
    )
    .await;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = gw.url();
            tokio::spawn(async move {
                let r = support::request(
                    "POST",
                    &format!("{url}/v1/chat/completions"),
                    &[
                        ("authorization", "Bearer sk-acme"),
                        ("content-type", "application/json"),
                    ],
                    hello("m").to_string(),
                )
                .await;
                (r, started.elapsed())
            })
        })
        .collect();
    for c in calls {
        let (r, took) = c.await.unwrap();
        assert_eq!(r.status, 429, "{}", r.text());
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((20..=30).contains(&after), "retry-after {after}");
        assert!(took < Duration::from_secs(4), "answered after {took:?}");
    }
    assert_eq!(
        mock_requests(&m).await,
        1,
        "the queued requests never reached the upstream"
    );
}
