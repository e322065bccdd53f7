//! Priority: queued critical requests are served before queued batch requests.

mod support;

use std::time::{Duration, Instant};
use support::shaping::*;
use support::*;

#[tokio::test]
async fn critical_requests_are_served_before_queued_batch_requests() {
    let m = mock("openai", "slow", &["--latency-ms", "800"]);
    let gw = gateway(&config(
        &backend("sim", &m, "openai", ", max_concurrent: 1"),
        ACME,
        "{ priority: { header_can_raise: true }, congestion: { codel_target_ms: 60000 } }",
    ));
    let t0 = Instant::now();
    let filler = spawn_chat(&gw, "sk-acme", &[], hello("m"), t0, "filler");
    eventually(Duration::from_secs(5), "backend busy", || async {
        mock_in_flight(&m).await == 1
    })
    .await;
    let mut hs = Vec::new();
    for i in 0..3 {
        let h = [("x-priority", "batch")];
        hs.push(spawn_chat(
            &gw,
            "sk-acme",
            &h,
            hello("m"),
            t0,
            format!("batch{i}"),
        ));
    }
    queued(&gw, "batch", 3.0, Duration::from_millis(600)).await;
    for i in 0..2 {
        let h = [("x-priority", "critical")];
        hs.push(spawn_chat(
            &gw,
            "sk-acme",
            &h,
            hello("m"),
            t0,
            format!("critical{i}"),
        ));
    }
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
