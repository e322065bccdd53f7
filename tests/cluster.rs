//! The cluster with real processes: three gateway nodes gossiping over UDP on loopback, a real
//! `redis-server` (killed and restarted mid-test), simulated upstreams.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::cluster::{ADMIN, KEY_A, KEY_ENV, admin, live_count, wait_live};
use support::redis::RedisServer;
use support::*;

struct Cluster {
    nodes: Vec<Proc>,
}

/// Node `i`'s config: same backends (same order: affinity ids agree), its own gossip port, all seeds.
fn node_config(
    i: usize,
    gossip: &[u16],
    backends: &str,
    tenants: &str,
    redis: Option<&str>,
    per_node: &str,
) -> String {
    let seeds: Vec<String> = gossip.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let redis = redis
        .map(|u| format!("\n  redis: {{ url: \"{u}\", timeout_ms: 100 }}"))
        .unwrap_or_default();
    format!(
        "node: {{ id: node-{i} }}\nadmin_token_env: SLUICE_ADMIN_TOKEN\nbackends:\n{backends}{per_node}{tenants}routing:\n  strategy: round-robin\n  affinity: {{ header: x-session-id }}\nshaping: {{ max_wait_ms: 0 }}\ncluster:\n  cluster_id: test\n  gossip_listen: 127.0.0.1:{}\n  seeds: [{}]\n  gossip_interval_ms: 100\n  dead_after_ms: 1500\n  secret_env: {KEY_ENV}{redis}\n",
        gossip[i],
        seeds.join(", ")
    )
}

fn start(configs: Vec<String>) -> Cluster {
    let nodes = configs
        .iter()
        .map(|c| gateway_env(c, &[("SLUICE_ADMIN_TOKEN", ADMIN), (KEY_ENV, KEY_A)]))
        .collect();
    Cluster { nodes }
}

async fn wait_members(c: &Cluster, n: u64) {
    wait_live(&c.nodes.iter().collect::<Vec<_>>(), n).await;
}

/// Send `n` requests for `key` spread round-robin over the nodes, `conc` at a time; statuses.
async fn spread(c: &Cluster, key: &str, n: usize, conc: usize) -> Vec<u16> {
    let urls: Vec<String> = c.nodes.iter().map(|p| p.url()).collect();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let mut set = tokio::task::JoinSet::new();
        for j in i..(i + conc).min(n) {
            let (url, key) = (urls[j % urls.len()].clone(), key.to_string());
            set.spawn(async move { chat_at(&url, &key, hello("m"), &[]).await.status });
        }
        while let Some(s) = set.join_next().await {
            out.push(s.unwrap());
        }
        i += conc;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_holds_across_three_nodes_and_survives_redis_loss() {
    let mut redis = RedisServer::start();
    let m = mock("openai", "up", &[]);
    let gossip = [free_port(), free_port(), free_port()];
    let backends = backend("up", &m, "openai", "");
    // 60 per minute (1/s) with a burst of 30; the fast tenant refills at 10/s for the fallback check.
    let tenants = "tenants:\n  - { id: t, keys: [sk-t], limits: { requests_per_minute: 60, burst: 30 } }\n  - { id: f, keys: [sk-f], limits: { requests_per_minute: 600, burst: 30 } }\n";
    let c = start(
        (0..3)
            .map(|i| node_config(i, &gossip, &backends, tenants, Some(&redis.url()), ""))
            .collect(),
    );
    wait_members(&c, 3).await;
    eventually(
        Duration::from_secs(10),
        "limiter in global mode",
        || async { admin(&c.nodes[0]).await["limiter_mode"] == "global" },
    )
    .await;

    // 90 requests over three nodes: three independent nodes would admit 90, the global bucket ~30.
    let t0 = Instant::now();
    let statuses = spread(&c, "sk-t", 90, 15).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let bound = ((30.0 + elapsed.ceil()) * 1.01).ceil() as usize;
    println!("global: admitted {admitted} of 90 in {elapsed:.2}s (bound {bound})");
    assert!(
        admitted >= 30 && admitted <= bound,
        "admitted {admitted}, bound {bound}"
    );

    // Redis dies: no 5xx, fallback at once, each node holds limit/3.
    redis.kill();
    let statuses = spread(&c, "sk-f", 30, 10).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    for node in &c.nodes {
        eventually(Duration::from_secs(2), "fallback mode", || async {
            admin(node).await["limiter_mode"] == "fallback"
        })
        .await;
        assert_eq!(
            gauge(node, "sluice_limiter_fallback_divisor", &[]).await,
            Some(3.0)
        );
    }
    // Drain the fallback bursts, then measure the steady admitted rate over ~3 s against 10/s.
    spread(&c, "sk-f", 60, 30).await;
    let t0 = Instant::now();
    let mut admitted = 0;
    let mut total = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let s = spread(&c, "sk-f", 12, 12).await;
        assert!(
            s.iter().all(|s| *s == 200 || *s == 429),
            "a 5xx while redis is down: {s:?}"
        );
        admitted += s.iter().filter(|s| **s == 200).count();
        total += s.len();
    }
    let rate = admitted as f64 / t0.elapsed().as_secs_f64();
    println!("fallback: admitted {admitted} of {total}, {rate:.1}/s against a global 10/s");
    assert!((8.5..=11.5).contains(&rate), "fallback rate {rate:.2}/s");

    // Redis back on the same port: global mode returns everywhere.
    let _redis = RedisServer::start_on(redis.port);
    for node in &c.nodes {
        eventually(Duration::from_secs(10), "global mode again", || async {
            admin(node).await["limiter_mode"] == "global"
        })
        .await;
    }
}

/// Three nodes and a Redis that is not there: every node is in fallback and divides by the member
/// count. The simulated upstream lives as long as the returned `Proc`.
fn in_fallback() -> (Proc, Cluster) {
    let m = mock("openai", "up", &[]);
    let gossip = [free_port(), free_port(), free_port()];
    let backends = backend("up", &m, "openai", "");
    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let tenants = "tenants:\n  - { id: t, keys: [sk-t], limits: { requests_per_minute: 600 } }\n";
    let c = start(
        (0..3)
            .map(|i| node_config(i, &gossip, &backends, tenants, Some(&dead_redis), ""))
            .collect(),
    );
    (m, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_seen_within_seconds_and_the_fallback_share_is_redivided() {
    let (_m, mut c) = in_fallback();
    wait_members(&c, 3).await;
    for node in &c.nodes {
        eventually(Duration::from_secs(5), "divisor 3", || async {
            gauge(node, "sluice_limiter_fallback_divisor", &[]).await == Some(3.0)
        })
        .await;
    }
    // Kill node 2 (no graceful leave).
    let t0 = Instant::now();
    c.nodes[2].kill();
    for node in &c.nodes[..2] {
        eventually(Duration::from_secs(8), "node-2 gone", || async {
            live_count(node).await == 2
        })
        .await;
    }
    let seen = t0.elapsed();
    println!(
        "dead node seen by both survivors after {:.2}s",
        seen.as_secs_f64()
    );
    assert!(seen < Duration::from_secs(5), "took {seen:?}");
    for node in &c.nodes[..2] {
        eventually(Duration::from_secs(3), "divisor 2", || async {
            gauge(node, "sluice_limiter_fallback_divisor", &[]).await == Some(2.0)
        })
        .await;
    }
    // The members list says who is gone.
    let members = admin(&c.nodes[0]).await["cluster"]["members"].clone();
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "node-2" && m["status"] != "ready"),
        "{members}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_cooldowns_and_affinity_agree_across_nodes() {
    let (a, b) = (mock("openai", "a", &[]), mock("openai", "b", &[]));
    // `c` will be rate limited without rate-limit headers: only its 429s say so.
    let cm = mock("openai", "c", &["--no-rate-limit-headers"]);
    let gossip = [free_port(), free_port(), free_port()];
    // Only node-0 probes `a`: its verdict is the only evidence, so it counts for everyone.
    let with_probe = |i: usize| {
        let hc = if i == 0 {
            ", health_check: { path: /health, interval_ms: 100, unhealthy_threshold: 1, healthy_threshold: 1 }"
        } else {
            ""
        };
        format!(
            "{}{}{}",
            backend("a", &a, "openai", hc),
            backend("b", &b, "openai", ""),
            backend("c", &cm, "openai", "")
        )
    };
    let tenants = "tenants:\n  - { id: t, keys: [sk-t] }\n";
    let c = start(
        (0..3)
            .map(|i| node_config(i, &gossip, &with_probe(i), tenants, None, ""))
            .collect(),
    );
    wait_members(&c, 3).await;

    // The admin endpoint needs the token.
    let r = request(
        "GET",
        &format!("{}/admin/cluster", c.nodes[1].url()),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 403);

    // Affinity: the same key maps to the same backend from every node.
    for k in 0..12 {
        let key = format!("session-{k}");
        let mut seen = Vec::new();
        for node in &c.nodes {
            let r = chat(node, "sk-t", hello("m"), &[("x-session-id", &key)]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            seen.push(r.header("x-sluice-backend").unwrap().to_string());
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{key}: {seen:?}");
    }
    // Now `c` takes one request per 10 s: its next answers are 429s with Retry-After.
    mock_control(&cm, json!({"rate_limit_rps": 0.1})).await;
    // With affinity by header only, plain requests round-robin: drive `c` into its 429 via node-0.
    let before = mock_requests(&cm).await;
    eventually(
        Duration::from_secs(5),
        "node-0 saw a 429 from c",
        || async {
            chat(&c.nodes[0], "sk-t", hello("m"), &[]).await;
            let labels = [("backend", "c"), ("reason", "rate_limited")];
            gauge(&c.nodes[0], "sluice_failovers_total", &labels)
                .await
                .is_some()
        },
    )
    .await;
    // Within a few gossip rounds the cooldown holds on the other nodes too: nothing more reaches `c`.
    let c_count = mock_requests(&cm).await;
    assert!(c_count > before);
    let t0 = Instant::now();
    eventually(Duration::from_secs(3), "cooldown gossiped", || async {
        for node in &c.nodes[1..] {
            let v = admin(node).await;
            let be = v["cluster"]["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == "c")
                .cloned()
                .unwrap();
            if be["merged"]["available"] != json!(false) {
                return false;
            }
        }
        true
    })
    .await;
    println!(
        "cooldown seen by the other nodes after {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    let now_count = mock_requests(&cm).await;
    for node in &c.nodes[1..] {
        for _ in 0..6 {
            let r = chat(node, "sk-t", hello("m"), &[]).await;
            assert_eq!(r.status, 200);
            assert_ne!(r.header("x-sluice-backend"), Some("c"));
        }
    }
    assert_eq!(
        mock_requests(&cm).await,
        now_count,
        "a cooled-down backend got traffic"
    );

    // `a` fails node-0's probes: every node routes around it within a couple of gossip rounds.
    mock_control(&a, json!({"healthy": false})).await;
    let t0 = Instant::now();
    for node in &c.nodes {
        eventually(Duration::from_secs(3), "a routed around", || async {
            let v = admin(node).await;
            let be = v["cluster"]["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == "a")
                .cloned()
                .unwrap();
            be["merged"]["available"] == json!(false)
        })
        .await;
    }
    println!(
        "probe failure on node-0 honoured by all after {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    let a_before = mock_requests(&a).await;
    for node in &c.nodes {
        for _ in 0..4 {
            let r = chat(node, "sk-t", hello("m"), &[]).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-sluice-backend"), Some("b"));
        }
    }
    assert_eq!(mock_requests(&a).await, a_before);
}

/// Send `signal` (STOP, CONT) to a node's process with the shell's builtin `kill`.
fn signal(node: &Proc, signal: &str) {
    let pid = node.child.id();
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Issue #15: stale membership is not solitude. A node starts dividing by its seed count (2 seed
/// peers + itself), and one paused past `dead_after` (SIGSTOP, like a GC pause or a VM freeze) wakes
/// to a failure detector that declares both peers dead: it keeps dividing by 3, never by 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_keeps_dividing_by_the_last_stable_member_count() {
    let (_m, c) = in_fallback();
    let paused = &c.nodes[2];
    // From its first moment, before any gossip: the seed count.
    assert_eq!(
        gauge(paused, "sluice_limiter_fallback_divisor", &[]).await,
        Some(3.0)
    );
    wait_members(&c, 3).await;
    // Whether the paused node's failure detector runs before the gossip queued during the pause is
    // read decides if it sees its peers as gone on waking (what used to make it divide by 1): pause
    // until it did, at most five times.
    const PAUSE: Duration = Duration::from_millis(2500);
    let mut exercised = None;
    for attempt in 1..=5 {
        let before = paused.logs().len();
        signal(paused, "STOP");
        let stopped = Instant::now();
        for node in &c.nodes[..2] {
            eventually(Duration::from_secs(8), "node-2 seen dead", || async {
                live_count(node).await == 2
            })
            .await;
        }
        // The pause is the scenario: well past dead_after (1.5 s).
        eventually(PAUSE * 2, "the pause is over", || async {
            stopped.elapsed() >= PAUSE
        })
        .await;
        signal(paused, "CONT");
        wait_members(&c, 3).await;
        let pause = stopped.elapsed();
        // Every change of the divisor is logged: there was none on the paused node.
        let logs = paused.logs();
        assert!(
            !logs.contains("re-divided"),
            "the paused node ({pause:?}) re-divided its quotas: {logs}"
        );
        if logs[before..].contains("cluster member left") {
            exercised = Some((attempt, pause));
            break;
        }
    }
    let Some((attempt, pause)) = exercised else {
        panic!(
            "in five pauses node-2 never saw its peers as gone: nothing was tested\n{}",
            paused.logs()
        );
    };
    let admin_view = admin(paused).await;
    assert_eq!(admin_view["cluster"]["divisor"], 3, "{admin_view}");
    assert_eq!(
        gauge(paused, "sluice_limiter_fallback_divisor", &[]).await,
        Some(3.0)
    );
    println!(
        "pause {attempt}: {:.2}s, the node saw its peers as gone on waking, divisor stayed 3",
        pause.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_follow_up_reaches_the_backend_holding_its_predecessor_from_any_node() {
    let mocks: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|n| mock("openai", n, &[]))
        .collect();
    let backends: String = ["a", "b", "c"]
        .iter()
        .zip(&mocks)
        .map(|(n, m)| backend(n, m, "openai", ", apis: [responses]"))
        .collect();
    let gossip = [free_port(), free_port(), free_port()];
    let tenants = "tenants:\n  - { id: t, keys: [sk-t] }\n";
    let c = start(
        (0..3)
            .map(|i| node_config(i, &gossip, &backends, tenants, None, ""))
            .collect(),
    );
    wait_members(&c, 3).await;
    let call = |node: &Proc, body: Value| {
        let url = format!("{}/v1/responses", node.url());
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", "Bearer sk-t"),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await
        }
    };
    for stream in [false, true] {
        let first = call(&c.nodes[0], json!({"model": "m", "input": "remember me"})).await;
        assert_eq!(first.status, 200, "{}", first.text());
        let holder = first.header("x-sluice-backend").unwrap().to_string();
        let mut id = first.json()["id"].as_str().unwrap().to_string();
        assert!(id.contains("--sl"), "the id names its backend: {id}");
        // Round-robin would spread these over a, b and c: each follow-up goes to the holder, from
        // every node, and continues the chain (a stored response is unknown to the others).
        for round in 0..2 {
            for node in &c.nodes[1..] {
                let body = json!({"model": "m", "input": "go on", "previous_response_id": id, "stream": stream});
                let r = call(node, body).await;
                assert_eq!(r.status, 200, "round {round}: {}", r.text());
                assert_eq!(r.header("x-sluice-backend"), Some(holder.as_str()));
                let v = if stream {
                    let text = r.text();
                    let done = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .next_back()
                        .unwrap()
                        .to_string();
                    serde_json::from_str::<Value>(&done).unwrap()["response"].clone()
                } else {
                    r.json()
                };
                assert_eq!(v["previous_response_id"], id.as_str(), "{v}");
                id = v["id"].as_str().unwrap().to_string();
                assert!(id.contains("--sl"), "{id}");
            }
        }
    }
    // A response held by a backend the gateway no longer has: a clear 400 naming the field.
    let body = json!({"model": "m", "input": "x", "previous_response_id": "resp_1--sl00000000"});
    let r = call(&c.nodes[2], body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "previous_response_id");
    assert!(r.text().contains("no longer has"), "{}", r.text());
}

/// A one-node cluster `cluster_id` on the Redis at `url`, with tenant `t` (burst 5, 6 per minute).
fn lone_node(cluster_id: &str, url: &str, m: &Proc) -> Proc {
    let tenants =
        "tenants:\n  - { id: t, keys: [sk-t], limits: { requests_per_minute: 6, burst: 5 } }\n";
    let backends = backend("up", m, "openai", "");
    let cfg = node_config(0, &[free_port()], &backends, tenants, Some(url), "")
        .replace("cluster_id: test\n", &format!("cluster_id: {cluster_id}\n"));
    start(vec![cfg]).nodes.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_on_one_redis_keep_separate_buckets_under_their_cluster_id() {
    use support::redis::{ACL_PASS, ACL_USER};
    // The ACL user may touch `test-a:*` and `test-b:*` (and `sluice:*`) keys only.
    let redis = RedisServer::start_with_auth();
    let url = redis.url_as(ACL_USER, ACL_PASS);
    let m = mock("openai", "up", &[]);
    let (a, b) = (lone_node("test-a", &url, &m), lone_node("test-b", &url, &m));
    for node in [&a, &b] {
        eventually(Duration::from_secs(10), "global mode", || async {
            admin(node).await["limiter_mode"] == "global"
        })
        .await;
    }
    // Each cluster has its own burst of 5 (a shared bucket would leave cluster b nothing).
    for node in [&a, &b] {
        let mut ok = 0;
        for _ in 0..8 {
            ok += (chat(node, "sk-t", hello("m"), &[]).await.status == 200) as usize;
        }
        assert!((5..=6).contains(&ok), "admitted {ok} of 8");
    }
    let mut c = redis.connection();
    let exists = |c: &mut ::redis::Connection, prefix: &str| -> bool {
        let [key, _] = sluice::ratelimit::bucket_keys(prefix, "t");
        ::redis::cmd("EXISTS").arg(&key).query(c).unwrap()
    };
    assert!(exists(&mut c, "test-a") && exists(&mut c, "test-b"));
    assert!(
        !exists(&mut c, "sluice"),
        "the default prefix is the cluster id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_is_an_error_line_at_start_naming_the_redacted_url() {
    use support::redis::ACL_USER;
    let redis = RedisServer::start_with_auth();
    let m = mock("openai", "up", &[]);
    let node = lone_node("test", &redis.url_as(ACL_USER, "not-the-password"), &m);
    let redacted = format!("redis://{ACL_USER}:***@127.0.0.1:{}", redis.port);
    eventually(
        Duration::from_secs(10),
        "an authentication error line",
        || async {
            node.logs().lines().any(|l| {
                l.contains("ERROR") && l.contains("authentication failed") && l.contains(&redacted)
            })
        },
    )
    .await;
    assert!(!node.logs().contains("not-the-password"), "{}", node.logs());
    assert_eq!(admin(&node).await["limiter_mode"], "fallback");
    // Requests are still answered (from the fallback's limits), never a 5xx.
    let s = chat(&node, "sk-t", hello("m"), &[]).await.status;
    assert!(s == 200 || s == 429, "{s}");
}
