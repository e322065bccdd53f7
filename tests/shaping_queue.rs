//! Backend capacity queues: requests wait for a slot of a backend's `max_concurrent` and the backend
//! never sees more than its limit, short bursts are queued rather than shed, the queue-length gauge
//! adds up every route's waiters, and a request for an idle backend does not wait behind a full one.

mod support;

use std::time::{Duration, Instant};
use support::shaping::*;
use support::*;

#[tokio::test]
async fn backend_capacity_queue_holds_requests_and_caps_in_flight() {
    let (m, gw) = slow_backend(300, 2, "{ congestion: { codel_target_ms: 60000 } }");
    let t0 = Instant::now();
    let hs = burst(&gw, "sk-acme", 6, t0);
    let done = join_all(hs).await;
    let s = mock_stats(&m).await;
    assert!(
        s["max_in_flight"].as_u64().unwrap() <= 2,
        "backend saw more than max_concurrent: {s}"
    );
    assert_all_ok(&done);
    assert_eq!(s["requests"], 6);
    // They waited for slots: at least three rounds of 300 ms.
    let last = done.iter().map(|d| d.at).max().unwrap();
    assert!(last >= Duration::from_millis(850), "{last:?}");
    let text = metrics_text(&gw).await;
    let waited = metric(
        &text,
        "sluice_queue_wait_seconds_count",
        &[("priority", "normal")],
    );
    assert!(waited.is_some_and(|n| n >= 4.0), "{waited:?}");
}

/// The scenario with the default congestion settings: a burst of 6 requests on a backend with
/// `max_concurrent: 2` and 300 ms answers needs about 600 ms of queuing, far inside `max_wait_ms`
/// (10 s by default). Every request should be served; CoDel's default 50 ms target sheds some instead.
/// (`critical_reserve: 0` so that only the CoDel defaults are in play.)
#[tokio::test]
async fn default_codel_does_not_shed_a_short_burst_queued_for_a_slow_backend() {
    let (m, gw) = slow_backend(300, 2, "{ congestion: { critical_reserve: 0.0 } }");
    let t0 = Instant::now();
    let hs = burst(&gw, "sk-acme", 6, t0);
    let done = join_all(hs).await;
    assert!(mock_stats(&m).await["max_in_flight"].as_u64().unwrap() <= 2);
    let got: Vec<_> = done
        .iter()
        .map(|d| (d.status(), d.took(), message(&d.resp)))
        .collect();
    assert!(
        done.iter().all(|d| d.status() == 200),
        "requests shed although they would have been served within ~600 ms: {got:?}"
    );
}

/// With `max_concurrent: 2` and the default `critical_reserve: 0.1`, ordinary traffic should still get
/// both slots: a tenth of 2 slots should round to no reserved slot, not up to one (that reserves 50% of
/// the backend, five times the configured share). 6 requests of 300 ms take three rounds, not six.
#[tokio::test]
async fn small_max_concurrent_is_not_halved_by_the_critical_reserve() {
    let (m, gw) = slow_backend(300, 2, "{ congestion: { codel_target_ms: 60000 } }");
    let t0 = Instant::now();
    let hs = burst(&gw, "sk-acme", 6, t0);
    let done = join_all(hs).await;
    assert!(done.iter().all(|d| d.status() == 200));
    let s = mock_stats(&m).await;
    let last = done.iter().map(|d| d.at).max().unwrap();
    assert!(
        last < Duration::from_millis(1400),
        "6 requests of 300 ms on 2 slots took {last:?}: normal traffic used one slot ({s})"
    );
    assert_eq!(s["max_in_flight"], 2, "{s}");
}

/// The slot check and the slot taking must be one atomic step: requests arriving together must not all
/// see a free slot and all start. Bursts of 24 on `max_concurrent: 2` over kept-alive connections (so
/// they arrive as close together as possible), several times.
#[tokio::test]
async fn max_concurrent_holds_when_requests_arrive_together() {
    use http_body_util::BodyExt;
    let (m, gw) = slow_backend(
        50,
        2,
        "{ max_wait_ms: 30000, congestion: { critical_reserve: 0.0, codel_target_ms: 60000 } }",
    );
    let client = client();
    let url = format!("{}/v1/chat/completions", gw.url());
    let mut worst = 0;
    for round in 0..6 {
        let r = request("POST", &format!("{}/_mock/reset", m.url()), &[], "").await;
        assert_eq!(r.status, 200);
        let hs: Vec<_> = (0..24)
            .map(|_| {
                let req = http::Request::post(&url)
                    .header("authorization", "Bearer sk-acme")
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        hello("m").to_string(),
                    )))
                    .unwrap();
                let c = client.clone();
                tokio::spawn(async move {
                    let resp = c.request(req).await.expect("request");
                    let status = resp.status().as_u16();
                    resp.into_body().collect().await.expect("body");
                    status
                })
            })
            .collect();
        for h in hs {
            let status = tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("burst finished")
                .unwrap();
            assert_eq!(status, 200);
        }
        let s = mock_stats(&m).await;
        let max = s["max_in_flight"].as_u64().unwrap();
        worst = worst.max(max);
        assert!(
            max <= 2,
            "round {round}: the backend saw {max} at once with max_concurrent: 2: {s}"
        );
    }
    println!("worst max_in_flight: {worst}");
}

/// Queues belong to routes; the gauge is per priority class only, so it must add up every route's
/// waiters rather than show whichever queue changed last.
#[tokio::test]
async fn queue_length_gauge_counts_the_waiters_of_every_route() {
    let m = mock("openai", "slow", &["--latency-ms", "2000"]);
    let cfg = format!(
        "backends:\n{}{}tenants:\n{ACME}routing:\n  rules:\n    \
         - {{ name: one, match: {{ headers: {{ x-route: one }} }}, route: {{ backend: a }} }}\n    \
         - {{ name: two, match: {{ headers: {{ x-route: two }} }}, route: {{ backend: b }} }}\n\
         shaping: {{ congestion: {{ codel_target_ms: 60000 }} }}\n",
        backend("a", &m, "openai", ", max_concurrent: 1"),
        backend("b", &m, "openai", ", max_concurrent: 1"),
    );
    let gw = gateway(&cfg);
    let t0 = Instant::now();
    let mut hs = vec![
        spawn_chat(
            &gw,
            "sk-acme",
            &[("x-route", "one")],
            hello("m"),
            t0,
            "fill-a",
        ),
        spawn_chat(
            &gw,
            "sk-acme",
            &[("x-route", "two")],
            hello("m"),
            t0,
            "fill-b",
        ),
    ];
    upstream_busy(&m, 2).await;
    for (i, route) in ["one", "one", "two"].into_iter().enumerate() {
        hs.push(spawn_chat(
            &gw,
            "sk-acme",
            &[("x-route", route)],
            hello("m"),
            t0,
            format!("q{i}"),
        ));
    }
    let last = std::cell::Cell::new(None);
    try_poll(Duration::from_millis(1200), || async {
        last.set(gauge(&gw, "sluice_queue_length", &[("priority", "normal")]).await);
        (last.get() == Some(3.0)).then_some(())
    })
    .await;
    assert_eq!(
        last.get(),
        Some(3.0),
        "three requests wait (two on route one, one on route two)"
    );
    assert_all_ok(&join_all(hs).await);
}

/// One queue per route: a request that only an idle backend of the pool can serve (another model)
/// must not wait behind requests for a full backend.
#[tokio::test]
async fn a_request_for_an_idle_backend_does_not_wait_behind_a_full_one() {
    let busy = mock("openai", "busy", &["--latency-ms", "2000"]);
    let idle = mock("openai", "idle", &[]);
    let backends = format!(
        "{}{}",
        backend(
            "busy",
            &busy,
            "openai",
            ", max_concurrent: 1, models: { fast: fast }"
        ),
        backend("idle", &idle, "openai", ", models: { smart: smart }"),
    );
    let gw = gateway(&config(
        &backends,
        ACME,
        "{ congestion: { codel_target_ms: 60000 } }",
    ));
    let t0 = Instant::now();
    let fill = spawn_chat(&gw, "sk-acme", &[], hello("fast"), t0, "fill");
    upstream_busy(&busy, 1).await;
    let waiting = spawn_chat(&gw, "sk-acme", &[], hello("fast"), t0, "waiting");
    queued(&gw, "normal", 1.0, Duration::from_millis(800)).await;
    let t = Instant::now();
    let r = chat(&gw, "sk-acme", hello("smart"), &[]).await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-sluice-backend"), Some("idle"));
    assert!(
        took < Duration::from_millis(1000),
        "a request for the idle backend waited {took:?} behind the full one"
    );
    assert_eq!(fill.await.unwrap().status(), 200);
    assert_eq!(waiting.await.unwrap().status(), 200);
}
