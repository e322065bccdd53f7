//! Congestion control: the adaptive concurrency limit shrinks when a backend slows and fails and
//! recovers after, and under overload CoDel sheds batch work while critical requests keep flowing.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::shaping::*;
use support::*;
use tokio::task::JoinHandle;

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
            let (base, stop) = (gw.url(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let h = [("x-priority", priority)];
                    seen.push(chat_at(&base, key, hello("m"), &h).await.status);
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
    let (m, gw) = sim_backend(
        &["--latency-ms", "20"],
        ", eject_after: 100000",
        ACME,
        "{ congestion: { initial_limit: 8, min_limit: 2, max_limit: 64, codel_target_ms: 60000 } }",
    );
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
    let limits = std::cell::RefCell::new(Vec::new());
    let recovered = try_poll(Duration::from_secs(20), || async {
        let l = limit(&gw).await;
        let mut seen = limits.borrow_mut();
        if seen.last() != Some(&l) {
            seen.push(l);
        }
        (l >= 8.0).then_some(())
    })
    .await;
    if recovered.is_none() {
        let backend = mock_stats(&m).await;
        panic!(
            "the limit did not recover once the backend was fast again: {:?}; backend {backend}",
            limits.borrow()
        );
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
    assert!(mock_stats(&m).await["max_in_flight"].as_u64().unwrap() <= 4);
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
