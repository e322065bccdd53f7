//! Smoothing: a burst reaches the backend spread over time at the configured rate.

mod support;

use std::time::{Duration, Instant};
use support::shaping::*;
use support::*;

#[tokio::test]
async fn smoothing_spreads_a_burst_over_time_at_the_backend() {
    let m = mock("openai", "sim", &[]);
    let gw = gateway(&config(
        &backend(
            "sim",
            &m,
            "openai",
            ", smoothing: { rate_per_sec: 10, burst: 1 }",
        ),
        ACME,
        "{}",
    ));
    let t0 = Instant::now();
    let hs = burst(&gw, "sk-acme", 5, t0);
    // Watch the upstream's request counter while the burst goes through.
    let seen = std::cell::RefCell::new(Vec::<(u64, Duration)>::new());
    let arrived = try_poll(Duration::from_secs(10), || async {
        let n = mock_requests(&m).await;
        let mut seen = seen.borrow_mut();
        if seen.last().is_none_or(|(last, _)| *last != n) {
            seen.push((n, t0.elapsed()));
        }
        (n >= 5).then_some(())
    })
    .await;
    let seen = seen.into_inner();
    assert!(arrived.is_some(), "the burst never arrived: {seen:?}");
    let done = join_all(hs).await;
    assert!(done.iter().all(|d| d.status() == 200));
    let first = seen.iter().find(|(n, _)| *n >= 1).unwrap().1;
    let all = seen.iter().find(|(n, _)| *n >= 5).unwrap().1;
    assert!(
        seen.iter().any(|(n, _)| (1..5).contains(n)),
        "the upstream saw the burst at once: {seen:?}"
    );
    assert!(
        all - first >= Duration::from_millis(300),
        "arrivals at the upstream: {seen:?}"
    );
    let mut at: Vec<Duration> = done.iter().map(|d| d.at).collect();
    at.sort();
    assert!(
        at[4] - at[0] >= Duration::from_millis(350),
        "responses: {at:?}"
    );
}
