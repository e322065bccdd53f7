//! Scenario tests: three nodes over chitchat's in-memory `ChannelTransport` (and two over real UDP on
//! 127.0.0.1), driven as scripted steps. No fixed sleeps: every step polls with a deadline.

use super::*;
use crate::balance::{Backend, BackendTable, BackendView};
use crate::config::{BackendConfig, ClusterConfig};
use chitchat::transport::{ChannelTransport, UdpTransport};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GOSSIP_MS: u64 = 100;
const DEAD_AFTER_MS: u64 = 1_000;
/// Generous: the machine is shared with builds.
const DEADLINE: Duration = Duration::from_secs(10);

fn cfg(port: u16, seeds: &[u16]) -> ClusterConfig {
    ClusterConfig {
        cluster_id: "sluice-test".into(),
        gossip_listen: format!("127.0.0.1:{port}"),
        advertise: None,
        seeds: seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        gossip_interval_ms: GOSSIP_MS,
        dead_after_ms: DEAD_AFTER_MS,
        secret_env: None,
        insecure: true,
        max_cooldown_ms: 120_000,
        redis: None,
    }
}

/// Poll `f` every 10 ms until it holds; panic with `what` after `deadline`. Returns the time taken.
async fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn join_retrying(cfg: &ClusterConfig, id: &str, transport: &ChannelTransport) -> Cluster {
    let start = Instant::now();
    loop {
        match Cluster::join(cfg, id, transport).await {
            Ok(c) => return c,
            // The previous incarnation's socket is released when its gossip task ends.
            Err(e) if start.elapsed() < DEADLINE => {
                tracing::debug!(error = %e, "retrying join");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("join {id}: {e}"),
        }
    }
}

fn ids(c: &Cluster) -> Vec<String> {
    c.live_nodes().into_iter().map(|n| n.id).collect()
}

fn count(c: &Cluster) -> usize {
    *c.live_count_watch().borrow()
}

fn table(name: &str) -> BackendTable {
    let yaml = format!(
        "name: {name}\nurl: http://127.0.0.1:9\nprotocol: openai\nhealth_check: {{ path: /health }}\n"
    );
    let bc: BackendConfig = serde_saphyr::from_str(&yaml).expect("backend config");
    Arc::new(vec![Arc::new(Backend::new(
        0,
        bc,
        "http://127.0.0.1:9".into(),
    ))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_membership_keys_death_and_restart() {
    let net = ChannelTransport::default();
    let ports = [21001, 21002, 21003];
    let n1 = Cluster::join(&cfg(ports[0], &ports), "n1", &net)
        .await
        .unwrap();
    let n2 = Cluster::join(&cfg(ports[1], &ports), "n2", &net)
        .await
        .unwrap();
    let n3 = Cluster::join(&cfg(ports[2], &ports), "n3", &net)
        .await
        .unwrap();
    assert_eq!(n1.self_id(), "n1");
    assert!(count(&n1) >= 1, "self always counts");

    // All three see each other.
    wait_for("3 live members everywhere", DEADLINE, || {
        [&n1, &n2, &n3].iter().all(|c| count(c) == 3)
    })
    .await;
    for c in [&n1, &n2, &n3] {
        assert_eq!(ids(c), ["n1", "n2", "n3"]);
    }

    // A key set on one node reaches the others; so does its deletion.
    n1.set_self("test:color", "blue".into()).await;
    wait_for("n1's key on n2 and n3", DEADLINE, || {
        [&n2, &n3]
            .iter()
            .all(|c| c.node_value("n1", "test:color").as_deref() == Some("blue"))
    })
    .await;
    n1.delete_self("test:color").await;
    wait_for("n1's key deleted on n2 and n3", DEADLINE, || {
        [&n2, &n3]
            .iter()
            .all(|c| c.node_value("n1", "test:color").is_none())
    })
    .await;

    // n3 dies (no goodbye): the others notice within about dead_after.
    let old_generation = n3.self_node().generation;
    let mut watch1 = n1.live_count_watch();
    drop(n3);
    let took = wait_for("n3 declared dead", DEADLINE, || {
        count(&n1) == 2 && count(&n2) == 2
    })
    .await;
    eprintln!("dead node detected after {took:?}");
    assert!(
        took < Duration::from_millis(DEAD_AFTER_MS * 3),
        "dead node detected after {took:?}, dead_after is {DEAD_AFTER_MS} ms"
    );
    assert!(
        watch1.has_changed().unwrap(),
        "the count watch was notified"
    );
    assert_eq!(*watch1.borrow_and_update(), 2);
    assert_eq!(ids(&n1), ["n1", "n2"]);
    let dead = n1.members();
    let n3_member = dead.iter().find(|m| m.node.id == "n3").expect("n3 listed");
    assert!(!n3_member.live);
    assert_eq!(n3_member.admin_json()["status"], "dead");

    // n3 restarts with a new generation: the same member comes back, once.
    let n3 = join_retrying(&cfg(ports[2], &ports), "n3", &net).await;
    assert!(n3.self_node().generation > old_generation);
    wait_for("restarted n3 live everywhere", DEADLINE, || {
        [&n1, &n2, &n3].iter().all(|c| count(c) == 3)
    })
    .await;
    for c in [&n1, &n2, &n3] {
        assert_eq!(ids(c), ["n1", "n2", "n3"]);
    }
    let seen = n1.live_nodes().into_iter().find(|n| n.id == "n3").unwrap();
    assert_eq!(seen.generation, n3.self_node().generation);

    // n2 leaves gracefully: the others see it leaving before the failure detector could.
    let leaving = tokio::spawn(n2.leave());
    let took = wait_for("n2 seen leaving", DEADLINE, || {
        count(&n1) == 2 && count(&n3) == 2
    })
    .await;
    eprintln!("graceful leave seen after {took:?}");
    let m = n1.members();
    let n2_member = m.iter().find(|m| m.node.id == "n2").expect("n2 listed");
    assert_eq!(
        n2_member.status,
        NodeStatus::Leaving,
        "seen through its announcement, not the failure detector"
    );
    leaving.await.unwrap();
    assert_eq!(ids(&n3), ["n1", "n3"]);

    let admin = n1.admin_json();
    assert_eq!(admin["self"], "n1");
    assert_eq!(admin["live_count"], 2);
    assert_eq!(admin["members"][0]["id"], "n1");
    assert_eq!(admin["members"][0]["is_self"], true);
    assert_eq!(admin["members"][0]["status"], "ready");
    assert!(admin["members"][0]["generation"].as_u64().unwrap() > 0);
    assert_eq!(admin["members"][0]["addr"], "127.0.0.1:21001");

    n1.leave().await;
    n3.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_view_merges_peer_reports() {
    let net = ChannelTransport::default();
    let ports = [22001, 22002, 22003];
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let c = Cluster::join(&cfg(*port, &ports), &format!("n{}", i + 1), &net)
            .await
            .unwrap();
        let t = table("b1");
        let _publisher = publisher(&c, t.clone());
        let view = ClusterView::new(&c, t.clone());
        nodes.push((c, t, view));
    }
    wait_for("3 live members", DEADLINE, || {
        nodes.iter().all(|(c, _, _)| count(c) == 3)
    })
    .await;
    let v1 = nodes[0].2.clone();
    let b1 = nodes[0].1[0].clone();
    let b1 = &b1;
    wait_for("n1 hears both peers on b1", DEADLINE, || {
        v1.peer_aggregate(b1).is_some_and(|p| p.reporters == 2)
    })
    .await;
    assert!(v1.status(b1, Instant::now()).available);

    // In flight on the peers adds up on n1.
    let _guards: Vec<_> = (0..3).map(|_| nodes[1].1[0].start()).collect();
    let _guards3: Vec<_> = (0..2).map(|_| nodes[2].1[0].start()).collect();
    let _mine = b1.start();
    wait_for("cluster in-flight 6 on n1", DEADLINE, || {
        v1.status(b1, Instant::now()).in_flight == 6
    })
    .await;

    // A cooldown on n3 alone keeps n1 off the backend until it runs out.
    nodes[2].1[0].cooldown(Instant::now() + Duration::from_millis(1_500));
    wait_for("n3's cooldown seen on n1", DEADLINE, || {
        let s = v1.status(b1, Instant::now());
        !s.available && s.cooldown_until.is_some()
    })
    .await;
    assert!(b1.local_status(Instant::now()).available);
    wait_for("cooldown over", DEADLINE, || {
        v1.status(b1, Instant::now()).available
    })
    .await;

    // Latency: the median of the three nodes' EWMAs.
    let now = Instant::now();
    b1.observe_latency(Duration::from_millis(10), now);
    nodes[1].1[0].observe_latency(Duration::from_millis(40), now);
    nodes[2].1[0].observe_latency(Duration::from_millis(400), now);
    wait_for("median latency on n1", DEADLINE, || {
        v1.status(b1, Instant::now())
            .latency_ms
            .is_some_and(|l| (30.0..=50.0).contains(&l))
    })
    .await;

    // One peer's probes fail: no majority, still available.
    for _ in 0..2 {
        nodes[1].1[0].probe(false);
    }
    wait_for("n2's down vote on n1", DEADLINE, || {
        v1.peer_aggregate(b1).is_some_and(|p| p.down == 1)
    })
    .await;
    assert!(v1.status(b1, Instant::now()).available);
    // A second one: majority down, unavailable on n1 although its own probes are fine.
    for _ in 0..2 {
        nodes[2].1[0].probe(false);
    }
    wait_for("majority down on n1", DEADLINE, || {
        !v1.status(b1, Instant::now()).available
    })
    .await;
    assert!(b1.local_status(Instant::now()).available);

    let admin = v1.admin_json();
    assert_eq!(admin["live_count"], 3);
    assert_eq!(admin["members"].as_array().unwrap().len(), 3);
    let b = &admin["backends"][0];
    assert_eq!(b["name"], "b1");
    assert_eq!(b["merged"]["available"], false);
    assert_eq!(b["merged"]["voters"], 3);
    let reports = b["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0]["node"], "n1");
    assert_eq!(reports[0]["is_self"], true);
    assert!(reports.iter().all(|r| r["counted"] == true));
    assert_eq!(
        reports.iter().filter(|r| r["healthy"] == false).count(),
        2,
        "{admin:#}"
    );

    // The peers leave: n1 falls back to its own view.
    let mut rest = nodes.split_off(1);
    while let Some((c, _, _)) = rest.pop() {
        c.leave().await;
    }
    wait_for("n1 alone again", DEADLINE, || {
        v1.status(b1, Instant::now()).available
    })
    .await;
    assert_eq!(v1.status(b1, Instant::now()).in_flight, 1);
    let (c1, _, _) = nodes.pop().unwrap();
    c1.leave().await;
    // After leaving, the view is local-only.
    wait_for("view cleared after leave", DEADLINE, || {
        v1.peer_aggregate(b1).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_udp_on_loopback() {
    let a = Cluster::join(&cfg(0, &[]), "udp-a", &UdpTransport)
        .await
        .unwrap();
    let a_addr = a.self_node().gossip_addr;
    assert_ne!(a_addr.port(), 0, "port 0 picks a free port");
    let b = Cluster::join(&cfg(0, &[a_addr.port()]), "udp-b", &UdpTransport)
        .await
        .unwrap();
    wait_for("2 live members over UDP", DEADLINE, || {
        count(&a) == 2 && count(&b) == 2
    })
    .await;
    b.set_self("test:k", "v".into()).await;
    wait_for("b's key on a", DEADLINE, || {
        a.node_value("udp-b", "test:k").as_deref() == Some("v")
    })
    .await;
    b.leave().await;
    wait_for("a alone", DEADLINE, || count(&a) == 1).await;
    a.leave().await;
}

#[tokio::test]
async fn join_rejects_unreachable_advertise_address() {
    let mut c = cfg(0, &[]);
    c.gossip_listen = "0.0.0.0:0".into();
    let err = Cluster::join(&c, "x", &ChannelTransport::default())
        .await
        .err()
        .expect("0.0.0.0 cannot be advertised");
    assert!(err.to_string().contains("cluster.advertise"), "{err}");
    c.advertise = Some("127.0.0.1:23001".into());
    let ok = Cluster::join(&c, "x", &ChannelTransport::default())
        .await
        .unwrap();
    assert_eq!(ok.self_node().gossip_addr.port(), 23001);
    ok.leave().await;
}
