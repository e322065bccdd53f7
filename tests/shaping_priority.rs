//! Priority: queued critical requests are served before queued batch requests.

mod support;

use std::time::{Duration, Instant};
use support::shaping::*;
use support::*;

#[tokio::test]
async fn critical_requests_are_served_before_queued_batch_requests() {
    let (m, gw) = slow_backend(
        800,
        1,
        "{ priority: { header_can_raise: true }, congestion: { codel_target_ms: 60000 } }",
    );
    let t0 = Instant::now();
    let filler = spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, "filler");
    upstream_busy(&m, 1).await;
    let send = |priority: &str, i: usize| {
        let h = [("x-priority", priority)];
        spawn_chat(&gw, "sk-acme", &h, hello("m"), t0, format!("{priority}{i}"))
    };
    let mut hs: Vec<_> = (0..3).map(|i| send("batch", i)).collect();
    queued(&gw, "batch", 3.0, Duration::from_millis(600)).await;
    hs.extend((0..2).map(|i| send("critical", i)));
    queued(&gw, "critical", 2.0, Duration::from_millis(600)).await;
    let filler = filler.await.unwrap();
    assert_eq!(filler.status(), 200);
    let done = join_all(hs).await;
    assert_all_ok(&done);
    let last_critical = finished(&done, "critical").max().unwrap();
    let first_batch = finished(&done, "batch").min().unwrap();
    let order: Vec<_> = done.iter().map(|d| (&d.tag, d.at)).collect();
    assert!(
        last_critical < first_batch,
        "critical requests were not served first: {order:?}"
    );
    // Served one at a time: the backend never had two at once.
    assert_eq!(mock_stats(&m).await["max_in_flight"], 1);
}
