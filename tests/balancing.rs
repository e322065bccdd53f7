//! Each balancing algorithm's distribution, end to end over real upstream processes.

mod support;

use std::collections::HashMap;
use support::*;

fn pool_config(backends: &[(&str, &Proc, &str)], algorithm: &str) -> String {
    let mut cfg = String::from("backends:\n");
    for (name, m, extra) in backends {
        cfg.push_str(&backend(name, m, "openai", extra));
    }
    let names: Vec<&str> = backends.iter().map(|b| b.0).collect();
    cfg.push_str(TENANTS);
    cfg.push_str(&format!(
        "routing:\n  rules:\n    - {{ name: pool, match: {{ path: /v1/chat }}, route: {{ backend: [{}], algorithm: {algorithm} }} }}\n",
        names.join(", ")
    ));
    cfg
}

async fn send_sequential(gw: &Proc, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = chat(gw, "sk-acme", hello("m"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-sluice-route"), Some("pool"));
        *seen
            .entry(r.header("x-sluice-backend").unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

/// `workers` clients, each sending `each` requests one after another.
async fn send_concurrent(gw: &Proc, workers: usize, each: usize) -> HashMap<String, usize> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let url = gw.url();
        set.spawn(async move {
            let mut got = Vec::new();
            for _ in 0..each {
                let r = chat_at(&url, "sk-acme", hello("m"), &[]).await;
                assert_eq!(r.status, 200, "{}", r.text());
                got.push(r.header("x-sluice-backend").unwrap().to_string());
            }
            got
        });
    }
    let mut seen = HashMap::new();
    while let Some(got) = set.join_next().await {
        for b in got.unwrap() {
            *seen.entry(b).or_default() += 1;
        }
    }
    seen
}

#[tokio::test]
async fn round_robin_is_even() {
    let (a, b, c) = (
        mock("openai", "a", &[]),
        mock("openai", "b", &[]),
        mock("openai", "c", &[]),
    );
    let gw = gateway(&pool_config(
        &[("a", &a, ""), ("b", &b, ""), ("c", &c, "")],
        "round-robin",
    ));
    let seen = send_sequential(&gw, 30).await;
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{seen:?}"
    );
    // The upstreams agree.
    assert_eq!(mock_requests(&a).await, 10);
}

#[tokio::test]
async fn weighted_follows_the_ratio() {
    let (a, b) = (mock("openai", "a", &[]), mock("openai", "b", &[]));
    let gw = gateway(&pool_config(
        &[("a", &a, ", weight: 3"), ("b", &b, ", weight: 1")],
        "weighted",
    ));
    let seen = send_sequential(&gw, 40).await;
    assert_eq!((seen["a"], seen["b"]), (30, 10), "{seen:?}");
}

#[tokio::test]
async fn least_connections_avoids_the_busy_backend() {
    let slow = mock("openai", "slow", &["--latency-ms", "400"]);
    let fast = mock("openai", "fast", &[]);
    let gw = gateway(&pool_config(
        &[("slow", &slow, ""), ("fast", &fast, "")],
        "least-connections",
    ));
    let seen = send_concurrent(&gw, 4, 10).await;
    let fast_n = seen.get("fast").copied().unwrap_or(0);
    assert!(fast_n >= 30, "{seen:?}");
}

#[tokio::test]
async fn least_latency_prefers_the_faster_backend() {
    let slow = mock("openai", "slow", &["--latency-ms", "80"]);
    let fast = mock("openai", "fast", &[]);
    let gw = gateway(&pool_config(
        &[("slow", &slow, ""), ("fast", &fast, "")],
        "least-latency",
    ));
    let seen = send_sequential(&gw, 20).await;
    assert!(seen["fast"] >= 18, "{seen:?}");
    assert!(
        seen.get("slow").copied().unwrap_or(0) >= 1,
        "the unknown backend is explored first: {seen:?}"
    );
}

#[tokio::test]
async fn least_cost_picks_the_cheaper_backend() {
    let cheap = mock("openai", "cheap", &[]);
    let dear = mock("openai", "dear", &[]);
    let gw = gateway(&pool_config(
        &[
            (
                "dear",
                &dear,
                ", price: { input_per_1m: 5.0, output_per_1m: 15.0 }",
            ),
            (
                "cheap",
                &cheap,
                ", price: { input_per_1m: 0.1, output_per_1m: 0.4 }",
            ),
        ],
        "least-cost",
    ));
    let seen = send_sequential(&gw, 20).await;
    assert_eq!(seen.get("cheap"), Some(&20), "{seen:?}");
}

#[tokio::test]
async fn adaptive_shifts_load_to_the_healthier_backend() {
    let slow = mock("openai", "slow", &["--latency-ms", "150"]);
    let fast = mock("openai", "fast", &[]);
    let gw = gateway(&pool_config(
        &[("slow", &slow, ""), ("fast", &fast, "")],
        "adaptive",
    ));
    let seen = send_concurrent(&gw, 4, 15).await;
    let f = seen.get("fast").copied().unwrap_or(0);
    assert!(f >= 45, "{seen:?}");
}
