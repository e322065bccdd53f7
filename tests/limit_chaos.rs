//! The chaos suite, short (issue #15, item 5): three nodes, a real Redis, open-loop load at 3× a
//! tenant's limit of 600 requests per minute (30 requests/s offered), one fault per test. Each test
//! asserts the bounds on the windows a short run measures (1 s and 10 s): the largest sliding
//! window holds at most (burst + rate × window) × 1.01 through Redis and × 1.10 where a fault makes
//! the nodes fall back or switch (or two requests more, whichever is larger: admissions are seen
//! through response times); no 5xx; at most 1.1 Redis calls per admitted request while queueing.
//! The tests take turns (one cluster at a time on the machine). Burst = limit needs 60 s windows to
//! show anything at 3× load: that is for the benchmark (`cargo bench --bench limit_chaos`).
//! The same scenarios run again with a token limit (reserve at admission, reconcile with the
//! answer's `usage`): the bucket (a minute of tokens) is drained before the load, so its 10 s
//! windows are bounded by rate × window (1 s windows are printed, not checked). A paused node's 1 s
//! windows are printed, not checked either (see `check`).
//! `cargo test --test limit_chaos -- --nocapture` prints every run's figures.

mod chaos;
mod support;

use chaos::{Fault, Limits, Plan, Unit, run, table};
use std::sync::Mutex;

/// One cluster at a time: the runs measure timing on a small machine.
static TURN: Mutex<()> = Mutex::new(());

const RPM: u32 = 600;
const BURST: u32 = 10;
/// Through Redis, and where nodes fall back or switch.
const THROUGH_REDIS: f64 = 1.01;
const IN_TRANSITION: f64 = 1.10;

fn plan() -> Plan {
    Plan {
        seconds: 16.0,
        offered: 3.0,
        // Generous for a debug build on a busy machine: steady runs stay through Redis; the flaps
        // pause Redis for 10× as long.
        redis_timeout_ms: 100,
        pause_ms: 2_000,
        flap_ms: 1_000,
    }
}

/// Redis calls per admitted request while queueing: one booking. A token limit would add a
/// reconcile where the answer's usage differs from the reservation; the load's requests are priced
/// exactly (the upstream writes `max_tokens` words for a prompt it counts as Sluice estimates), so
/// none is needed and the bound is the same.
fn calls_bound(_unit: Unit) -> f64 {
    1.1
}

/// Run `fault` with burst 10 (or a token limit) and `max_wait_ms`, print the figures, assert the
/// bounds.
fn check(fault: Fault, max_wait_ms: u64, unit: Unit) {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let limits = Limits {
        rpm: RPM,
        burst: BURST,
        max_wait_ms,
        unit,
    };
    let report = run(fault, limits, &plan());
    println!("{}", table(std::slice::from_ref(&report)));
    let factor = match fault {
        Fault::Steady => THROUGH_REDIS,
        _ => IN_TRANSITION,
    };
    // Which windows are checked. A token bucket holds a minute of tokens: what it promises for a
    // 1 s window is that minute plus a second; drained, the 10 s window is the shortest that says
    // something fair (a few requests moved by a switch fill a 1 s window of a drained bucket).
    // A node resuming from a pause serves at once every booking whose slot passed while it was
    // stopped (each booked in Redis at its own slot): windows shorter than the pause see them
    // together.
    let shortest = match (unit, fault) {
        (Unit::Tokens, _) => 10.0,
        (_, Fault::NodePause) => plan().pause_ms as f64 / 1000.0,
        _ => 0.0,
    };
    let breaches = report.breaches(factor, calls_bound(unit), shortest);
    assert!(
        breaches.is_empty(),
        "{}: {}\n{}",
        report.name(),
        breaches.join("; "),
        table(std::slice::from_ref(&report))
    );
}

/// One test per scenario: `scenario!(name, fault, max_wait_ms)` limits requests;
/// `scenario!(name, fault, max_wait_ms, tokens)` limits tokens.
macro_rules! scenario {
    ($name:ident, $fault:expr, $wait:expr) => {
        #[test]
        fn $name() {
            check($fault, $wait, Unit::Requests);
        }
    };
    ($name:ident, $fault:expr, $wait:expr, tokens) => {
        #[test]
        fn $name() {
            check($fault, $wait, Unit::Tokens);
        }
    };
}

scenario!(steady, Fault::Steady, 0);
scenario!(queueing, Fault::Steady, 10_000);
scenario!(redis_killed_and_restarted, Fault::RedisKill, 0);
scenario!(
    redis_killed_and_restarted_queueing,
    Fault::RedisKill,
    10_000
);
scenario!(node_killed_and_restarted, Fault::NodeKill, 0);
scenario!(node_killed_and_restarted_queueing, Fault::NodeKill, 10_000);
scenario!(node_paused_and_resumed, Fault::NodePause, 0);
scenario!(node_paused_and_resumed_queueing, Fault::NodePause, 10_000);
scenario!(breaker_flap, Fault::BreakerFlap, 0);
scenario!(breaker_flap_queueing, Fault::BreakerFlap, 10_000);

// The same scenarios with a token limit (reserve, then reconcile with the answer's usage).
scenario!(tokens_steady, Fault::Steady, 0, tokens);
scenario!(tokens_queueing, Fault::Steady, 10_000, tokens);
scenario!(
    tokens_redis_killed_and_restarted,
    Fault::RedisKill,
    0,
    tokens
);
scenario!(
    tokens_redis_killed_and_restarted_queueing,
    Fault::RedisKill,
    10_000,
    tokens
);
scenario!(tokens_node_killed_and_restarted, Fault::NodeKill, 0, tokens);
scenario!(
    tokens_node_killed_and_restarted_queueing,
    Fault::NodeKill,
    10_000,
    tokens
);
scenario!(tokens_node_paused_and_resumed, Fault::NodePause, 0, tokens);
scenario!(
    tokens_node_paused_and_resumed_queueing,
    Fault::NodePause,
    10_000,
    tokens
);
scenario!(tokens_breaker_flap, Fault::BreakerFlap, 0, tokens);
scenario!(
    tokens_breaker_flap_queueing,
    Fault::BreakerFlap,
    10_000,
    tokens
);

/// The harness's own arithmetic: closed sliding windows, nearest-rank percentiles.
#[test]
fn windows_and_percentiles() {
    let t = [0.0, 0.5, 1.0, 1.01, 2.5, 2.6, 2.7, 3.5];
    assert_eq!(chaos::largest_window(&t, 1.0), 4);
    assert_eq!(chaos::largest_window(&t, 0.25), 3);
    assert_eq!(chaos::largest_window(&t, 10.0), 8);
    assert_eq!(chaos::largest_window(&[], 1.0), 0);
    let weighted = [(0.0, 5.0), (0.5, 1.0), (1.2, 7.0), (2.0, 2.0)];
    assert_eq!(chaos::largest_sum(&weighted, 1.0), 9.0);
    assert_eq!(chaos::largest_sum(&weighted, 0.1), 7.0);
    let v: Vec<f64> = (1..=200).map(f64::from).collect();
    assert_eq!(chaos::percentile(&v, 0.99), 198.0);
    assert_eq!(chaos::percentile(&v[..1], 0.99), 1.0);
    assert_eq!(chaos::percentile(&[], 0.99), 0.0);
}
