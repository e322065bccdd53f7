//! Global limiter benchmark (not a test). In one run:
//! 1. throughput of one node with the Redis limiter on every request vs the same node with no
//!    limiter (a generous limit that never refuses, so every request pays the Redis round trip);
//! 2. Redis calls per request (from the node's own counter);
//! 3. global accuracy: three nodes, one tenant limited to N per minute (burst N), offered 3N spread
//!    over the nodes; admitted / N, against three nodes without Redis (each admits N alone);
//! 4. throughput of one node with the limiter on a Redis Cluster (three primaries, three replicas)
//!    against the same node on a single Redis, in the same run (ratio printed).
//!
//! `cargo bench --bench limiter` (needs `wrk`, `redis-server` and `redis-cli`). Env: BENCH_SECONDS
//! (default 8).

mod common;
#[path = "../support/mod.rs"]
mod support;

use common::{median, need};
use std::process::Command;
use std::time::Duration;
use support::redis::{RedisCluster, RedisServer};
use support::wait::poll_blocking;
use support::{Proc, free_port};

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn wrk(dir: &std::path::Path, addr: &str, key: &str, secs: u64) -> f64 {
    common::wrk(dir, addr, key, BODY, secs)
}

/// Quiet logs: the benchmark measures the data path, not the log writer.
const QUIET: &[(&str, &str)] = &[("RUST_LOG", "warn")];

/// The sum of `name`'s samples with `labels` on `addr`'s `/metrics` (0 when there is none).
fn metric(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl");
    support::metric(&String::from_utf8_lossy(&out.stdout), name, labels).unwrap_or(0.0)
}

/// Wait (≤ 10 s) until the node at `addr` runs its limiter against Redis.
fn wait_global(addr: &str) {
    poll_blocking(Duration::from_secs(10), "limiter in global mode", || {
        (metric(addr, "sluice_limiter_mode", &[("mode", "global")]) >= 1.0).then_some(())
    });
}

fn post(addr: &str, key: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "-d",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            &format!("http://{addr}/v1/chat/completions"),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

fn cluster_cfg(
    up: &str,
    gossip: &[u16],
    i: usize,
    redis: Option<&str>,
    limit: u32,
    max_wait_ms: u64,
) -> String {
    let seeds: Vec<String> = gossip.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let redis = redis
        .map(|r| match r.strip_prefix("cluster ") {
            Some(nodes) => format!("\n  redis: {{ mode: cluster, nodes: [{nodes}] }}"),
            None => format!("\n  redis: {{ url: \"{r}\" }}"),
        })
        .unwrap_or_default();
    format!(
        "node: {{ id: n{i} }}\nbackends:\n  - {{ name: up, url: \"http://{up}\", protocol: openai }}\ntenants:\n  - {{ id: capped, keys: [sk-capped], limits: {{ requests_per_minute: {limit}, burst: {limit} }} }}\n  - {{ id: open, keys: [sk-open], limits: {{ requests_per_minute: 100000000, burst: 1000000 }} }}\n  - {{ id: free, keys: [sk-free] }}\nrouting: {{}}\nshaping: {{ max_wait_ms: {max_wait_ms} }}\ncluster:\n  gossip_listen: 127.0.0.1:{}\n  seeds: [{}]\n  gossip_interval_ms: 100\n  insecure: true{redis}\n",
        gossip[i],
        seeds.join(", ")
    )
}

fn main() {
    if !need("wrk") || !need("redis-server") || !need("curl") {
        eprintln!("skipped: the limiter benchmark needs wrk, redis-server and curl");
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = std::env::temp_dir().join(format!("sluice-limiter-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let redis_server = RedisServer::start();
    let redis = redis_server.url();
    let mock = support::spawn(
        &[
            "mock-upstream",
            "--listen",
            "127.0.0.1:0",
            "--protocol",
            "openai",
            "--output-tokens",
            "4",
        ],
        QUIET,
        "listening on",
    );
    let up = mock.addr.clone();

    // 1 + 2: one node in a cluster of one, Redis limiter vs no limit.
    let g = [free_port()];
    let node = support::gateway_env(&cluster_cfg(&up, &g, 0, Some(&redis), 100, 5000), QUIET);
    let addr = node.addr.clone();
    wait_global(&addr);
    wrk(&dir, &addr, "sk-open", 1);
    wrk(&dir, &addr, "sk-free", 1);
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..3 {
        let open = [("tenant", "open")];
        let calls0 = metric(&addr, "sluice_limiter_redis_calls_total", &[]);
        let reqs0 = metric(&addr, "sluice_limiter_decisions_total", &open);
        let a = wrk(&dir, &addr, "sk-open", secs);
        let calls = metric(&addr, "sluice_limiter_redis_calls_total", &[]) - calls0;
        let reqs = metric(&addr, "sluice_limiter_decisions_total", &open) - reqs0;
        let b = wrk(&dir, &addr, "sk-free", secs);
        println!(
            "  round {round}: redis limiter {a:.0} req/s ({:.2} redis calls/request), no limiter {b:.0} req/s",
            calls / reqs.max(1.0)
        );
        with.push(a);
        without.push(b);
    }
    let (a, b) = (median(with), median(without));
    println!(
        "throughput with the redis limiter on every request: {a:.0} req/s; without: {b:.0} req/s; ratio {:.2}",
        a / b
    );
    drop(node);

    // 3: accuracy across three nodes: N = 300 per minute, burst N, offered 3N.
    let n = 300u32;
    for (label, with_redis) in [("redis (global)", true), ("no redis (per node)", false)] {
        let g = [free_port(), free_port(), free_port()];
        let nodes: Vec<Proc> = (0..3)
            .map(|i| {
                let redis = with_redis.then_some(redis.as_str());
                support::gateway_env(&cluster_cfg(&up, &g, i, redis, n, 0), QUIET)
            })
            .collect();
        if with_redis {
            for node in &nodes {
                wait_global(&node.addr);
            }
            // A fresh bucket for this run.
            let _: () = redis::cmd("FLUSHALL")
                .query(&mut redis_server.connection())
                .expect("FLUSHALL");
        }
        let t0 = std::time::Instant::now();
        let admitted: usize = std::thread::scope(|s| {
            let hs: Vec<_> = nodes
                .iter()
                .map(|node| {
                    let a = node.addr.as_str();
                    s.spawn(move || (0..n).filter(|_| post(a, "sk-capped") == 200).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let el = t0.elapsed().as_secs_f64();
        let allowed = n as f64 + n as f64 / 60.0 * el;
        println!(
            "accuracy, {label}: offered {} over 3 nodes in {el:.1}s, admitted {admitted}; limit {n} + refill {:.0} = {allowed:.0}; admitted/allowed {:.3}",
            3 * n,
            n as f64 / 60.0 * el,
            admitted as f64 / allowed
        );
    }
    // 4: the same node on a Redis Cluster and on the single Redis, rounds interleaved.
    if need("redis-cli") {
        let cluster = RedisCluster::start(3);
        let seeds: Vec<String> = cluster.seeds().iter().map(|u| format!("\"{u}\"")).collect();
        let on_cluster = format!("cluster {}", seeds.join(", "));
        let mut per_topology = Vec::new();
        for r in [on_cluster.as_str(), redis.as_str()] {
            let g = [free_port()];
            let node = support::gateway_env(&cluster_cfg(&up, &g, 0, Some(r), 100, 5000), QUIET);
            wait_global(&node.addr);
            wrk(&dir, &node.addr, "sk-open", 1);
            per_topology.push(node);
        }
        let (mut on_c, mut on_s) = (Vec::new(), Vec::new());
        for round in 0..3 {
            let c = wrk(&dir, &per_topology[0].addr, "sk-open", secs);
            let s = wrk(&dir, &per_topology[1].addr, "sk-open", secs);
            println!("  round {round}: redis cluster {c:.0} req/s, single redis {s:.0} req/s");
            on_c.push(c);
            on_s.push(s);
        }
        let (c, s) = (median(on_c), median(on_s));
        println!(
            "throughput with the limiter on a redis cluster (3 primaries): {c:.0} req/s; on a single redis: {s:.0} req/s; ratio {:.2}",
            c / s
        );
    } else {
        eprintln!("redis cluster row skipped: needs redis-cli");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
