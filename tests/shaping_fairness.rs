//! Fairness among tenants: a quiet tenant is served within its share while a noisy one has a backlog.

mod support;

use std::time::{Duration, Instant};
use support::shaping::*;
use support::*;

#[tokio::test]
async fn a_quiet_tenant_is_not_starved_by_a_noisy_one() {
    let (_m, gw) = sim_backend(
        &["--latency-ms", "100"],
        ", max_concurrent: 1",
        "  - { id: noisy, keys: [sk-noisy], weight: 1 }\n  - { id: quiet, keys: [sk-quiet], weight: 1 }\n",
        "{ congestion: { codel_target_ms: 60000 } }",
    );
    let t0 = Instant::now();
    let mut hs: Vec<_> = (0..30)
        .map(|i| spawn_chat(&gw, "sk-noisy", &[], hello("m"), t0, format!("a{i}")))
        .collect();
    // The noisy tenant's backlog is in the queue before the quiet one shows up.
    eventually(Duration::from_secs(5), "noisy backlog queued", || async {
        gauge(&gw, "sluice_queue_length", &[("priority", "normal")])
            .await
            .is_some_and(|n| n >= 25.0)
    })
    .await;
    for i in 0..3 {
        hs.push(spawn_chat(
            &gw,
            "sk-quiet",
            &[],
            hello("m"),
            t0,
            format!("b{i}"),
        ));
    }
    let done = join_all(hs).await;
    assert_all_ok(&done);
    let quiet_last = finished(&done, "b").max().unwrap();
    let noisy_after = done
        .iter()
        .filter(|d| d.tag.starts_with('a') && d.at > quiet_last)
        .count();
    let noisy_last = finished(&done, "a").max().unwrap();
    assert!(
        noisy_after >= 15,
        "the quiet tenant finished at {quiet_last:?}, only {noisy_after} noisy requests after it \
         (noisy last at {noisy_last:?})"
    );
    let quiet_took = done
        .iter()
        .filter(|d| d.tag.starts_with('b'))
        .map(Done::took)
        .max()
        .unwrap();
    assert!(
        quiet_took < Duration::from_millis(1500),
        "quiet requests waited {quiet_took:?}"
    );
}
