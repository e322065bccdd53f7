//! The shaping metrics count what happened: each wait for a token or a backend slot is one queue-wait
//! observation, each shed request one `sluice_shed_total`, each limiter verdict one decision, and the
//! queue-length gauge is back to zero once everyone is served.

mod support;

use std::time::Instant;
use support::shaping::*;
use support::*;

#[tokio::test]
async fn shaping_metrics_count_each_wait_shed_and_limiter_decision() {
    let (m, gw) = sim_backend(
        &["--latency-ms", "400"],
        ", max_concurrent: 1",
        "  - { id: acme, keys: [sk-acme] }\n  - { id: t, keys: [sk-t1], limits: { requests_per_minute: 600, burst: 1 } }\n",
        "{ congestion: { codel_target_ms: 60000 } }",
    );
    let before = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &before,
            "sluice_backend_concurrency_limit",
            &[("backend", "sim")]
        ),
        Some(1.0),
        "{before}"
    );
    let t0 = Instant::now();
    // The rate-limited tenant, burst 1: one request goes at once and takes the backend's only slot
    // for 400 ms; the other waits ~100 ms for a token, then for the slot.
    let a = spawn_chat(&gw, "sk-t1", &[], hello("m"), t0, "t0");
    let b = spawn_chat(&gw, "sk-t1", &[], hello("m"), t0, "t1");
    upstream_busy(&m, 1).await;
    // Another tenant while the slot is taken: its 100 ms deadline passes in the queue.
    let c = spawn_chat(
        &gw,
        "sk-acme",
        &[("x-request-deadline", "100")],
        hello("m"),
        t0,
        "c",
    );
    let done = join_all(vec![a, b, c]).await;
    let statuses: Vec<_> = done.iter().map(|d| (d.tag.as_str(), d.status())).collect();
    assert_eq!(
        statuses,
        [("t0", 200), ("t1", 200), ("c", 504)],
        "{:?}",
        done.iter().map(|d| d.resp.text()).collect::<Vec<_>>()
    );
    assert_eq!(done[2].resp.json()["error"]["code"], "deadline_expired");
    assert_eq!(
        mock_requests(&m).await,
        2,
        "the shed request reached the upstream"
    );

    let after = metrics_text(&gw).await;
    let normal = [("priority", "normal")];
    let grew = |name: &str, labels: &[(&str, &str)]| grew(&before, &after, name, labels);
    // Three waits: t1 for its token, t1 for the slot, c for the slot until its deadline.
    assert_eq!(
        grew("sluice_queue_wait_seconds_count", &normal),
        3.0,
        "{after}"
    );
    assert_eq!(
        grew(
            "sluice_queue_wait_seconds_bucket",
            &[("priority", "normal"), ("le", "+Inf")]
        ),
        3.0,
        "{after}"
    );
    let waited = grew("sluice_queue_wait_seconds_sum", &normal);
    assert!(
        waited >= 0.15,
        "t1 waited ~0.1 s for a token and c ~0.1 s for its deadline; the sum is {waited}"
    );
    // Exactly one shed, by its deadline, at normal priority.
    assert_eq!(grew("sluice_shed_total", &[]), 1.0, "{after}");
    assert_eq!(
        grew(
            "sluice_shed_total",
            &[("reason", "deadline"), ("priority", "normal")]
        ),
        1.0,
        "{after}"
    );
    // The limiter: both of t's requests admitted, one after waiting; none refused; c admitted.
    let decisions = |tenant, outcome| {
        grew(
            "sluice_limiter_decisions_total",
            &[("tenant", tenant), ("outcome", outcome)],
        )
    };
    assert_eq!(decisions("t", "allowed"), 2.0, "{after}");
    assert_eq!(decisions("t", "queued"), 1.0, "{after}");
    assert_eq!(decisions("t", "limited"), 0.0, "{after}");
    assert_eq!(decisions("acme", "allowed"), 1.0, "{after}");
    assert_eq!(metric(&after, "sluice_queue_length", &normal), Some(0.0));
    assert_eq!(
        metric(
            &after,
            "sluice_backend_concurrency_limit",
            &[("backend", "sim")]
        ),
        Some(1.0),
        "{after}"
    );
}
