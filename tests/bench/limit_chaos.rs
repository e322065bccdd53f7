//! The chaos suite, long (issue #15, item 5): three nodes, a real Redis, open-loop load at 3× a
//! tenant's limit, for every scenario (steady, Redis killed and restarted, a node killed and
//! restarted, a node paused and resumed, breaker flap) × burst (10 and = the limit) × `max_wait_ms`
//! (0 and 10,000; steady with 10,000 is the queueing scenario), and each scenario again with a token
//! limit (`CHAOS_UNITS`, default `requests,tokens`; the token bucket is drained before the load, so
//! its windows are bounded by rate × window). Prints, per run, the largest sliding
//! 1 s, 10 s and 60 s windows of admitted requests against burst + rate × window, Redis calls per
//! admitted request, 5xx and the p99 latency of admitted requests. The fault happens between a
//! quarter and half of each run: runs of at least 120 s give 60 s windows before, across and after.
//!
//! `cargo bench --bench limit_chaos` (needs `redis-server`; about 2.5 min per run, 20 runs). Env:
//! CHAOS_SCENARIOS (comma list: steady,redis-kill,node-kill,node-pause,breaker-flap; default all),
//! CHAOS_BURSTS (comma list of numbers or `rate`; default `10,rate`), CHAOS_WAITS (comma list of
//! `max_wait_ms`; default `0,10000`), CHAOS_SECONDS (per run, default 150), CHAOS_RPM (default 600),
//! CHAOS_OFFERED (× the limit, default 3), CHAOS_REDIS_TIMEOUT_MS (default 5, the product's
//! default), CHAOS_PAUSE_MS (node pause, default 2000), CHAOS_FLAP_MS (each Redis pause, default 1000).

#[path = "../chaos/mod.rs"]
mod chaos;
mod common;
#[path = "../support/mod.rs"]
mod support;

use chaos::{Fault, Limits, Plan, Unit, run, table};
use common::need;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not understood"))
        })
        .unwrap_or(default)
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn main() {
    if !need("redis-server") {
        eprintln!("skipped: the chaos benchmark needs redis-server");
        return;
    }
    let rpm: u32 = env("CHAOS_RPM", 600);
    let plan = Plan {
        seconds: env("CHAOS_SECONDS", 150.0),
        offered: env("CHAOS_OFFERED", 3.0),
        redis_timeout_ms: env("CHAOS_REDIS_TIMEOUT_MS", 5),
        pause_ms: env("CHAOS_PAUSE_MS", 2_000),
        flap_ms: env("CHAOS_FLAP_MS", 1_000),
    };
    let faults: Vec<Fault> = list(
        "CHAOS_SCENARIOS",
        "steady,redis-kill,node-kill,node-pause,breaker-flap",
    )
    .iter()
    .map(|s| Fault::parse(s).unwrap_or_else(|| panic!("CHAOS_SCENARIOS: no scenario {s}")))
    .collect();
    let bursts: Vec<u32> = list("CHAOS_BURSTS", "10,rate")
        .iter()
        .map(|b| match b.as_str() {
            "rate" => rpm,
            n => n.parse().unwrap_or_else(|_| panic!("CHAOS_BURSTS: {n}")),
        })
        .collect();
    let units: Vec<Unit> = list("CHAOS_UNITS", "requests,tokens")
        .iter()
        .map(|u| match u.as_str() {
            "requests" => Unit::Requests,
            "tokens" => Unit::Tokens,
            other => panic!("CHAOS_UNITS: {other}"),
        })
        .collect();
    let waits: Vec<u64> = list("CHAOS_WAITS", "0,10000")
        .iter()
        .map(|w| w.parse().unwrap_or_else(|_| panic!("CHAOS_WAITS: {w}")))
        .collect();
    println!(
        "limit {rpm}/min, offered {}×, {} s per run, redis timeout {} ms; fault from {} s to {} s",
        plan.offered,
        plan.seconds,
        plan.redis_timeout_ms,
        plan.fault_window().0,
        plan.fault_window().1
    );
    let mut reports = Vec::new();
    // A token limit has no burst of its own (its bucket holds a minute): one run per wait.
    let mut shapes: Vec<(Unit, u32)> = Vec::new();
    for &unit in &units {
        match unit {
            Unit::Requests => shapes.extend(bursts.iter().map(|&b| (unit, b))),
            Unit::Tokens => shapes.push((unit, 0)),
        }
    }
    for &fault in &faults {
        for &(unit, burst) in &shapes {
            for &max_wait_ms in &waits {
                let limits = Limits {
                    rpm,
                    burst,
                    max_wait_ms,
                    unit,
                };
                let report = run(fault, limits, &plan);
                println!("{}", report.row());
                reports.push(report);
            }
        }
    }
    println!("\n{}", table(&reports));
}
