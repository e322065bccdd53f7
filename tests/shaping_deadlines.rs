//! Client deadlines (`x-request-deadline`): a deadline that passes in the queue is a 504 that never
//! reaches the upstream, a malformed one is a 400, and impatient clients do not eject a healthy backend.

mod support;

use std::time::{Duration, Instant};
use support::shaping::*;
use support::*;

#[tokio::test]
async fn a_deadline_that_passes_in_the_queue_gives_504_and_never_reaches_the_upstream() {
    let (m, gw) = slow_backend(1500, 1, "{ congestion: { codel_target_ms: 60000 } }");
    let t0 = Instant::now();
    let filler = spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, "filler");
    upstream_busy(&m, 1).await;
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
    let s = mock_stats(&m).await;
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
    assert_eq!(mock_stats(&m).await["requests"], 1);
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
    let (_m, gw) = sim_backend(&["--latency-ms", "300"], ", eject_after: 3", ACME, "{}");
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
