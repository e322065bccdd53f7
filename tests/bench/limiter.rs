//! Global limiter benchmark (not a test). In one run:
//! 1. throughput of one node with the Redis limiter on every request vs the same node with no
//!    limiter (a generous limit that never refuses, so every request pays the Redis round trip);
//! 2. Redis calls per request (from the node's own counter);
//! 3. global accuracy: three nodes, one tenant limited to N per minute (burst N), offered 3N spread
//!    over the nodes; admitted / N, against three nodes without Redis (each admits N alone).
//!
//! `cargo bench --bench limiter` (needs `wrk` and `redis-server`). Env: BENCH_SECONDS (default 8).

mod common;
use common::{Kill, free_port, median, need};

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn wrk(dir: &std::path::Path, addr: &str, key: &str, secs: u64) -> f64 {
    common::wrk(dir, addr, key, BODY, secs)
}

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `sluice ARGS` and return it with the address it printed after `marker`.
fn spawn(args: &[&str], marker: &str) -> (Kill, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("exited before starting").unwrap();
        if line.contains(marker) {
            break line
                .split("://")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Kill(child), addr)
}

fn gateway(dir: &std::path::Path, name: &str, cfg: &str) -> (Kill, String) {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, cfg).unwrap();
    spawn(
        &[
            "run",
            "--config",
            p.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "sluice listening on",
    )
}

fn metric(addr: &str, prefix: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
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
        .map(|r| format!("\n  redis: {{ url: \"{r}\" }}"))
        .unwrap_or_default();
    format!(
        "node: {{ id: n{i} }}\nbackends:\n  - {{ name: up, url: \"http://{up}\", protocol: openai }}\ntenants:\n  - {{ id: capped, keys: [sk-capped], limits: {{ requests_per_minute: {limit}, burst: {limit} }} }}\n  - {{ id: open, keys: [sk-open], limits: {{ requests_per_minute: 100000000, burst: 1000000 }} }}\n  - {{ id: free, keys: [sk-free] }}\nrouting: {{}}\nshaping: {{ max_wait_ms: {max_wait_ms} }}\ncluster:\n  gossip_listen: 127.0.0.1:{}\n  seeds: [{}]\n  gossip_interval_ms: 100{redis}\n",
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
    let rport = free_port();
    let _redis = Kill(
        Command::new("redis-server")
            .args([
                "--port",
                &rport.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server"),
    );
    let redis = format!("redis://127.0.0.1:{rport}");
    let (_up, up) = spawn(
        &[
            "mock-upstream",
            "--listen",
            "127.0.0.1:0",
            "--protocol",
            "openai",
            "--output-tokens",
            "4",
        ],
        "listening on",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", rport)).is_err() {
        assert!(Instant::now() < deadline, "redis did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    // 1 + 2: one node in a cluster of one, Redis limiter vs no limit.
    let g = [udp_port()];
    let (_node, addr) = gateway(
        &dir,
        "single",
        &cluster_cfg(&up, &g, 0, Some(&redis), 100, 5000),
    );
    let wait = Instant::now() + Duration::from_secs(10);
    while metric(&addr, "sluice_limiter_mode{mode=\"global\"}") < 1.0 {
        assert!(Instant::now() < wait, "limiter never reached global mode");
        std::thread::sleep(Duration::from_millis(50));
    }
    wrk(&dir, &addr, "sk-open", 1);
    wrk(&dir, &addr, "sk-free", 1);
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..3 {
        let calls0 = metric(&addr, "sluice_limiter_redis_calls_total");
        let reqs0 = metric(&addr, "sluice_limiter_decisions_total{tenant=\"open\"");
        let a = wrk(&dir, &addr, "sk-open", secs);
        let calls = metric(&addr, "sluice_limiter_redis_calls_total") - calls0;
        let reqs = metric(&addr, "sluice_limiter_decisions_total{tenant=\"open\"") - reqs0;
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
    drop(_node);

    // 3: accuracy across three nodes: N = 300 per minute, burst N, offered 3N.
    let n = 300u32;
    for (label, with_redis) in [("redis (global)", true), ("no redis (per node)", false)] {
        let g = [udp_port(), udp_port(), udp_port()];
        let nodes: Vec<(Kill, String)> = (0..3)
            .map(|i| {
                gateway(
                    &dir,
                    &format!("acc{i}{with_redis}"),
                    &cluster_cfg(&up, &g, i, with_redis.then_some(redis.as_str()), n, 0),
                )
            })
            .collect();
        if with_redis {
            for (_, a) in &nodes {
                let wait = Instant::now() + Duration::from_secs(10);
                while metric(a, "sluice_limiter_mode{mode=\"global\"}") < 1.0 {
                    assert!(Instant::now() < wait, "not global");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            // A fresh bucket for this run.
            let _ = Command::new("redis-cli")
                .args(["-p", &rport.to_string(), "FLUSHALL"])
                .output();
        }
        let t0 = Instant::now();
        let admitted: usize = std::thread::scope(|s| {
            let hs: Vec<_> = nodes
                .iter()
                .map(|(_, a)| {
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
    let _ = std::fs::remove_dir_all(&dir);
}
