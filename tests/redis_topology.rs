//! The cluster limiter on the Redis topologies production runs, with real processes on loopback:
//! a Redis Cluster (three primaries, three replicas) under three gateway nodes, one shard lost and
//! taken over by its replica; and a primary watched by three sentinels, killed under load.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::cluster::{ADMIN, KEY_A, KEY_ENV, admin, wait_live};
use support::redis::{RedisCluster, RedisSentinels};
use support::*;

/// Node `i` of three: the backends, the tenants, and `redis` (the body of `cluster.redis`).
fn node_config(i: usize, gossip: &[u16], backends: &str, tenants: &str, redis: &str) -> String {
    let seeds: Vec<String> = gossip.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!(
        "node: {{ id: node-{i} }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nbackends:\n{backends}{tenants}routing:\n  strategy: round-robin\nshaping: {{ max_wait_ms: 0 }}\ncluster:\n  cluster_id: test\n  gossip_listen: 127.0.0.1:{}\n  seeds: [{}]\n  gossip_interval_ms: 100\n  dead_after_ms: 1500\n  secret_env: {KEY_ENV}\n  redis: {{ {redis} }}\n",
        gossip[i],
        seeds.join(", ")
    )
}

fn start_nodes(backends: &str, tenants: &str, redis: &str) -> Vec<Proc> {
    let gossip = [free_port(), free_port(), free_port()];
    (0..3)
        .map(|i| {
            let cfg = node_config(i, &gossip, backends, tenants, redis);
            gateway_env(&cfg, &[("SLUICE_ADMIN_TOKEN", ADMIN), (KEY_ENV, KEY_A)])
        })
        .collect()
}

fn quoted(urls: &[String]) -> String {
    let q: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    q.join(", ")
}

/// Send `per_key` requests for each key, spread round-robin over the nodes, `conc` at a time;
/// (key index, status) of each.
async fn spread(nodes: &[Proc], keys: &[String], per_key: usize, conc: usize) -> Vec<(usize, u16)> {
    let urls: Vec<String> = nodes.iter().map(|p| p.url()).collect();
    let jobs: Vec<(usize, usize)> = (0..per_key)
        .flat_map(|round| (0..keys.len()).map(move |k| (round, k)))
        .collect();
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(conc) {
        let mut set = tokio::task::JoinSet::new();
        for (j, &(round, k)) in chunk.iter().enumerate() {
            let url = urls[(round * keys.len() + k + j) % urls.len()].clone();
            let key = keys[k].clone();
            set.spawn(async move { (k, chat_at(&url, &key, hello("m"), &[]).await.status) });
        }
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
    }
    out
}

/// The sum of every sample of `name` on `node`'s `/metrics`.
async fn metric_sum(node: &Proc, name: &str) -> f64 {
    metrics_text(node)
        .await
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of `name` over all nodes.
async fn sum_all(nodes: &[Proc], name: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        sum += metric_sum(node, name).await;
    }
    sum
}

/// Failed or slow Redis calls on all nodes.
async fn redis_errors(nodes: &[Proc]) -> f64 {
    sum_all(nodes, "sluice_limiter_redis_errors_total").await
}

fn no_5xx(statuses: &[(usize, u16)]) {
    let bad: Vec<_> = statuses
        .iter()
        .filter(|(_, s)| *s != 200 && *s != 429)
        .collect();
    assert!(bad.is_empty(), "not 200/429: {bad:?}");
}

/// Wait until every node's limiter is in `mode`.
async fn all_in_mode(nodes: &[Proc], mode: &str, within: Duration) {
    for node in nodes {
        let what = format!("limiter mode {mode}");
        eventually(within, &what, || async {
            admin(node).await["limiter_mode"] == mode
        })
        .await;
    }
}

fn fallback_tenants(v: &Value) -> BTreeSet<String> {
    v["limiter_fallback_tenants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_limits_hold_and_a_lost_shard_sends_only_its_tenants_to_the_fallback() {
    let mut cluster = RedisCluster::start(3);
    let m = mock("openai", "up", &[]);
    let backends = backend("up", &m, "openai", "");
    // 100 tenants, 6 per minute (one per 10 s) with a burst of 10 each.
    let ids: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let keys: Vec<String> = (0..100).map(|i| format!("sk-{i}")).collect();
    let mut tenants = String::from("tenants:\n");
    for (id, key) in ids.iter().zip(&keys) {
        tenants.push_str(&format!(
            "  - {{ id: {id}, keys: [{key}], limits: {{ requests_per_minute: 6, burst: 10 }} }}\n"
        ));
    }
    // A tenant with room to spare, for the resharding step.
    tenants.push_str(
        "  - { id: mover, keys: [sk-mover], limits: { requests_per_minute: 600, burst: 100 } }\n",
    );
    let redis = format!(
        "mode: cluster, nodes: [{}], timeout_ms: 100, breaker_open_ms: 300",
        quoted(&cluster.seeds())
    );
    let nodes = start_nodes(&backends, &tenants, &redis);
    wait_live(&nodes.iter().collect::<Vec<_>>(), 3).await;
    all_in_mode(&nodes, "global", Duration::from_secs(15)).await;
    // The tenants' slots and the primaries serving them.
    let slots: Vec<u16> = ids.iter().map(|id| cluster.slot_of(id)).collect();
    let owner = |c: &RedisCluster, i: usize| {
        c.primary_of(slots[i])
            .unwrap_or_else(|| panic!("slot {} not served: {:?}", slots[i], c.view()))
    };
    let primaries: BTreeSet<u16> = (0..ids.len()).map(|i| owner(&cluster, i)).collect();
    assert_eq!(primaries.len(), 3, "100 tenants land on every shard");

    // 20 requests per tenant over three nodes: independent nodes would admit all of them, the
    // global buckets 10 + one per 10 s each.
    let t0 = Instant::now();
    let statuses = spread(&nodes, &keys, 20, 40).await;
    let elapsed = t0.elapsed().as_secs_f64();
    no_5xx(&statuses);
    let allowed = 10.0 + (elapsed / 10.0).ceil();
    let bound = (allowed * 1.01).ceil() as usize;
    let mut admitted = vec![0usize; ids.len()];
    for (k, s) in &statuses {
        admitted[*k] += (*s == 200) as usize;
    }
    let total: usize = admitted.iter().sum();
    let (lo, hi) = (
        admitted.iter().min().unwrap(),
        admitted.iter().max().unwrap(),
    );
    println!(
        "redis cluster: {total} of {} admitted for 100 tenants in {elapsed:.2}s (per tenant {lo}..{hi}, allowed {allowed}, bound {bound}); admitted/allowed {:.4}",
        statuses.len(),
        total as f64 / (allowed * ids.len() as f64)
    );
    let errors = redis_errors(&nodes).await;
    let kinds: Vec<String> = metrics_text(&nodes[0])
        .await
        .lines()
        .filter(|l| l.starts_with("sluice_limiter_redis_errors_total"))
        .map(String::from)
        .collect();
    println!(
        "  failed or slow (> timeout_ms) Redis calls, answered by the fallback: {errors} (node 0: {kinds:?})"
    );
    // Below the burst only when calls failed (a fallback that starts empty refuses).
    assert!(
        *hi <= bound && (*lo >= 10 || errors > 0.0),
        "per tenant {lo}..{hi}, bound {bound}"
    );
    assert!(total as f64 <= allowed * ids.len() as f64 * 1.01);

    // Resharding under load: the slot of a tenant with room to spare moves to another primary
    // (MOVED/ASK followed by the client); no 5xx, no failed call, every node stays global, and its
    // bucket moves with the slot.
    let slot = cluster.slot_of("mover");
    let from = cluster.primary_of(slot).unwrap();
    let to = *primaries.iter().find(|p| **p != from).unwrap();
    let (errors0, calls0) = (
        redis_errors(&nodes).await,
        sum_all(&nodes, "sluice_limiter_redis_calls_total").await,
    );
    let load = tokio::spawn({
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        async move {
            let mut statuses = Vec::new();
            for i in 0..60 {
                let url = &urls[i % urls.len()];
                statuses.push((0, chat_at(url, "sk-mover", hello("m"), &[]).await.status));
            }
            statuses
        }
    });
    cluster.move_slot(slot, to);
    let mut during = load.await.unwrap();
    during.extend(spread(&nodes, &["sk-mover".to_string()], 9, 9).await);
    let admitted = during.iter().filter(|(_, s)| *s == 200).count();
    let calls = sum_all(&nodes, "sluice_limiter_redis_calls_total").await - calls0;
    let failed = redis_errors(&nodes).await - errors0;
    let on_new: i64 = cluster
        .node(to)
        .query(&["EXISTS", "test:{mover}:req"])
        .unwrap();
    println!(
        "slot {slot} moved {from} -> {to} under load: {admitted} of {} requests admitted, {calls} Redis calls, {failed} failed; bucket on the new primary: {}",
        during.len(),
        on_new == 1
    );
    // All within the burst: every request is admitted, but for a call that timed out while the
    // slot moved (a loaded machine): that one is answered by the fallback, by design, and its
    // share may refuse it. A handful at most.
    assert!(
        failed <= 3.0,
        "{failed} failed Redis calls while the slot moved"
    );
    assert!(
        admitted as f64 + failed >= during.len() as f64,
        "{admitted} of {} admitted with {failed} failed calls",
        during.len()
    );
    assert_eq!(on_new, 1, "the bucket moved with its slot");
    assert!(calls > 0.0);
    all_in_mode(&nodes, "global", Duration::from_secs(5)).await;

    // One primary dies: only its tenants fall back, the others stay global.
    let lost = owner(&cluster, 0);
    let replica = cluster.replica_of(lost);
    let affected: BTreeSet<String> = (0..ids.len())
        .filter(|&i| owner(&cluster, i) == lost)
        .map(|i| ids[i].clone())
        .collect();
    cluster.node(lost).kill();
    let t0 = Instant::now();
    // Tenants refused before the kill are refused from the over-limit cache (no Redis call) until
    // their retry-after (10 s): their fallback starts with their first failed calls after it.
    // Each round: every node three requests of each of the lost shard's tenants, one of the others.
    let sent = AtomicUsize::new(0);
    let lost_keys: Vec<String> = (0..ids.len())
        .filter(|&i| affected.contains(&ids[i]))
        .map(|i| keys[i].clone())
        .collect();
    let seen = try_poll(Duration::from_secs(40), || {
        let (nodes, keys, lost_keys, affected, sent) =
            (&nodes, &keys, &lost_keys, &affected, &sent);
        async move {
            let mut s = spread(nodes, lost_keys, 9, 60).await;
            s.extend(spread(nodes, keys, 1, 60).await);
            no_5xx(&s);
            sent.fetch_add(s.len(), Ordering::Relaxed);
            for node in nodes {
                let v = admin(node).await;
                if v["limiter_mode"] != "partial" || fallback_tenants(&v) != *affected {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    if seen.is_none() {
        let mut views = Vec::new();
        for node in &nodes {
            let v = admin(node).await;
            views.push(format!(
                "{} {}/{}",
                v["limiter_mode"],
                fallback_tenants(&v).len(),
                fallback_tenants(&v).intersection(&affected).count()
            ));
        }
        panic!(
            "expected the {} tenants of the lost shard in fallback; nodes (mode, in fallback/of them): {views:?}\n{}",
            affected.len(),
            nodes[0]
                .logs()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    println!(
        "shard on {lost} down: {} of 100 tenants in fallback on every node after {:.2}s, the other {} global ({} requests, no 5xx)",
        affected.len(),
        t0.elapsed().as_secs_f64(),
        100 - affected.len(),
        sent.load(Ordering::Relaxed)
    );
    for node in &nodes {
        assert_eq!(
            gauge(node, "sluice_limiter_fallback_tenants", &[]).await,
            Some(affected.len() as f64)
        );
    }

    // Its replica takes over: those tenants return to global.
    cluster.take_over(replica);
    let t0 = Instant::now();
    poll(Duration::from_secs(20), "every tenant global again", || {
        let (nodes, keys) = (&nodes, &keys);
        async move {
            no_5xx(&spread(nodes, keys, 1, 60).await);
            for node in nodes {
                let v = admin(node).await;
                if v["limiter_mode"] != "global" || !fallback_tenants(&v).is_empty() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    println!(
        "replica {replica} took over: global again after {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(owner(&cluster, 0), replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed_without_a_restart() {
    let mut redis = RedisSentinels::start();
    let m = mock("openai", "up", &[]);
    let backends = backend("up", &m, "openai", "");
    let tenants = "tenants:\n  - { id: t, keys: [sk-t], limits: { requests_per_minute: 60, burst: 30 } }\n  - { id: f, keys: [sk-f], limits: { requests_per_minute: 600, burst: 30 } }\n  - { id: g, keys: [sk-g], limits: { requests_per_minute: 60, burst: 30 } }\n";
    let cfg = format!(
        "mode: sentinel, sentinels: [{}], master_name: {}, timeout_ms: 100, breaker_open_ms: 300",
        quoted(&redis.urls()),
        support::redis::SENTINEL_MASTER
    );
    let nodes = Arc::new(start_nodes(&backends, tenants, &cfg));
    wait_live(&nodes.iter().collect::<Vec<_>>(), 3).await;
    all_in_mode(&nodes, "global", Duration::from_secs(15)).await;
    let measure = |key: &'static str| {
        let nodes = nodes.clone();
        async move {
            let errors0 = redis_errors(&nodes).await;
            let t0 = Instant::now();
            let s = spread(&nodes, &[key.to_string()], 90, 15).await;
            no_5xx(&s);
            let elapsed = t0.elapsed().as_secs_f64();
            let admitted = s.iter().filter(|(_, s)| *s == 200).count();
            let bound = ((30.0 + elapsed.ceil()) * 1.01).ceil() as usize;
            // Below the burst only by calls that failed (a fallback that starts empty refuses).
            let failed = (redis_errors(&nodes).await - errors0) as usize;
            assert!(
                admitted + failed >= 30 && admitted <= bound,
                "admitted {admitted} ({failed} failed calls), bound {bound}"
            );
            (admitted, bound, elapsed)
        }
    };
    let (admitted, bound, elapsed) = measure("sk-t").await;
    println!("sentinel, first primary: admitted {admitted} of 90 in {elapsed:.2}s (bound {bound})");

    // Load on every node while the primary dies and the sentinels promote the replica.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (nodes, stop) = (nodes.clone(), stop.clone());
        async move {
            let mut all = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                all.extend(spread(&nodes, &["sk-f".to_string()], 12, 12).await);
            }
            all
        }
    });
    let old = redis.primary.port;
    redis.primary.kill();
    let t0 = Instant::now();
    all_in_mode(&nodes, "fallback", Duration::from_secs(5)).await;
    let fallback_at = t0.elapsed().as_secs_f64();
    eventually(
        Duration::from_secs(30),
        "the sentinels promote the replica",
        || async { redis.primary_port() == Some(redis.replica.port) },
    )
    .await;
    let promoted_at = t0.elapsed().as_secs_f64();
    all_in_mode(&nodes, "global", Duration::from_secs(15)).await;
    let global_at = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    no_5xx(&statuses);
    println!(
        "primary {old} killed under load: fallback on every node after {fallback_at:.2}s, replica promoted after {promoted_at:.2}s, global again after {global_at:.2}s; {} requests, no 5xx",
        statuses.len()
    );

    // Global limits on the new primary, without a restart.
    let (admitted, bound, elapsed) = measure("sk-g").await;
    println!("sentinel, new primary: admitted {admitted} of 90 in {elapsed:.2}s (bound {bound})");
    let exists: i64 = redis
        .replica
        .query(&["EXISTS", "test:{g}:req"])
        .expect("ask the new primary");
    assert_eq!(exists, 1, "tenant g's bucket lives on the new primary");
}
