//! Gossip CPU benchmark (not a test): what sealing every gossip packet (ChaCha20-Poly1305, replay
//! window) costs an idle node. Two idle three-node clusters run side by side in one window, one
//! sealed (`secret_env`), one plain (`insecure: true`), at the docker-compose demo's settings
//! (gossip every 300 ms, two backends probed every second, no traffic). Each node's CPU time over
//! the window is read from `/proc/PID/task/*/schedstat` (nanoseconds on CPU, all threads: the
//! precise counterpart of utime + stime). Prints CPU per node (ms per minute, % of one core), the
//! sealed/plain ratio, and the difference.
//!
//! `cargo bench --bench gossip`. Env: BENCH_SECONDS (default 30).

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::cluster::{KEY_A, KEY_ENV};
use support::wait::poll_blocking;
use support::{Proc, free_port};

const INTERVAL_MS: u64 = 300;

/// Node `i` of cluster `id` (gossip ports `gossip`), sealed or plain, with the two simulated
/// upstreams `ups` as its backends.
fn node_cfg(id: &str, gossip: &[u16], i: usize, sealed: bool, ups: &[&str]) -> String {
    let seeds: Vec<String> = gossip.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let key = if sealed {
        format!("secret_env: {KEY_ENV}")
    } else {
        "insecure: true".to_string()
    };
    let health = "health_check: { path: /health, interval_ms: 1000, timeout_ms: 500 }";
    let backends: String = ups
        .iter()
        .enumerate()
        .map(|(b, up)| {
            format!("  - {{ name: up{b}, url: \"http://{up}\", protocol: openai, {health} }}\n")
        })
        .collect();
    format!(
        "node: {{ id: {id}-{i} }}\nbackends:\n{backends}routing: {{}}\ncluster:\n  cluster_id: {id}\n  gossip_listen: 127.0.0.1:{}\n  seeds: [{}]\n  gossip_interval_ms: {INTERVAL_MS}\n  dead_after_ms: 3000\n  {key}\n",
        gossip[i],
        seeds.join(", ")
    )
}

fn cluster(id: &str, sealed: bool, ups: &[&str]) -> Vec<Proc> {
    let gossip = [free_port(), free_port(), free_port()];
    let env = [("RUST_LOG", "warn"), (KEY_ENV, KEY_A)];
    (0..3)
        .map(|i| support::gateway_env(&node_cfg(id, &gossip, i, sealed, ups), &env))
        .collect()
}

/// Nanoseconds on CPU of every thread of `pid` so far.
fn cpu_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `sluice_cluster_members` of the node at `addr`, read with curl.
fn members(addr: &str) -> f64 {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl");
    support::metric(
        &String::from_utf8_lossy(&out.stdout),
        "sluice_cluster_members",
        &[],
    )
    .unwrap_or(0.0)
}

fn main() {
    if !common_ok() {
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let quiet = [("RUST_LOG", "warn")];
    let mocks: Vec<Proc> = (0..2)
        .map(|i| {
            let name = format!("up{i}");
            let args = [
                "mock-upstream",
                "--listen",
                "127.0.0.1:0",
                "--protocol",
                "openai",
                "--name",
                &name,
            ];
            support::spawn(&args, &quiet, "listening on")
        })
        .collect();
    let ups: Vec<&str> = mocks.iter().map(|m| m.addr.as_str()).collect();
    let sealed = cluster("bench-sealed", true, &ups);
    let plain = cluster("bench-plain", false, &ups);
    for node in sealed.iter().chain(&plain) {
        poll_blocking(Duration::from_secs(15), "three live members", || {
            (members(&node.addr) >= 3.0).then_some(())
        });
    }
    // Past the start-up (joining, first probes), then one window for both clusters.
    std::thread::sleep(Duration::from_secs(2));
    let all: Vec<&Proc> = sealed.iter().chain(&plain).collect();
    let before: Vec<u64> = all.iter().map(|p| cpu_ns(p.child.id())).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let window = t0.elapsed();
    let used: Vec<u64> = all
        .iter()
        .zip(&before)
        .map(|(p, b)| cpu_ns(p.child.id()) - b)
        .collect();
    for node in &all {
        assert!(
            members(&node.addr) >= 3.0,
            "a cluster fell apart during the window"
        );
    }
    // Per node: ms of CPU per minute of wall time.
    let per_min = |ns: &[u64]| {
        let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
        mean / 1e6 * 60.0 / window.as_secs_f64()
    };
    let (s, p) = (per_min(&used[..3]), per_min(&used[3..]));
    let pct = |ms_per_min: f64| ms_per_min / 600.0;
    println!(
        "gossip CPU per idle node (3 nodes, gossip every {INTERVAL_MS} ms, 2 backends probed every 1 s, {:.0} s): \
         sealed {s:.1} ms/min ({:.3}% of a core), plain {p:.1} ms/min ({:.3}% of a core); \
         sealed/plain {:.2}, sealing adds {:.1} ms/min",
        window.as_secs_f64(),
        pct(s),
        pct(p),
        s / p,
        s - p
    );
    let each = |v: &[u64]| -> Vec<String> {
        v.iter()
            .map(|ns| format!("{:.1}", *ns as f64 / 1e6 * 60.0 / window.as_secs_f64()))
            .collect()
    };
    println!(
        "per node ms/min: sealed {:?}, plain {:?}",
        each(&used[..3]),
        each(&used[3..])
    );
}

/// Linux (`/proc`) and curl are needed.
fn common_ok() -> bool {
    let ok = std::path::Path::new("/proc/self/task").is_dir()
        && std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: the gossip benchmark needs /proc and curl");
    }
    ok
}
