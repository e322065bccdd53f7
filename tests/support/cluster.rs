//! What the cluster tests share: the admin token and gossip keys they start nodes with, and reading
//! `/admin/cluster`.

use super::{Proc, eventually, request};
use serde_json::Value;
use std::time::Duration;

/// The admin token every cluster test node reads from `SLUICE_ADMIN_TOKEN`.
pub const ADMIN: &str = "admin-secret";
/// The env var nodes read their gossip keys from (`cluster.secret_env`).
pub const KEY_ENV: &str = "SLUICE_GOSSIP_KEY";
/// Test gossip keys (32 bytes each, base64 and hex): never use these outside tests.
pub const KEY_A: &str = "dGVzdCBnb3NzaXAga2V5IEEgLS0gMzIgYnl0ZXMhISE=";
pub const KEY_B: &str = "8f1c6b0a3e5d47a29c4b1e0f7a6d5c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3";

/// `/admin/cluster` of `node`, with the admin token.
pub async fn admin(node: &Proc) -> Value {
    admin_get(node, "/admin/cluster").await
}

/// An admin endpoint (`/admin/...`) of `node`, with the admin token.
pub async fn admin_get(node: &Proc, path: &str) -> Value {
    let auth = format!("Bearer {ADMIN}");
    let r = request(
        "GET",
        &format!("{}{path}", node.url()),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// How many live members `node` sees.
pub async fn live_count(node: &Proc) -> u64 {
    admin(node).await["cluster"]["live_count"]
        .as_u64()
        .unwrap_or(0)
}

/// Wait (≤ 10 s) until every one of `nodes` sees `n` live members.
pub async fn wait_live(nodes: &[&Proc], n: u64) {
    for node in nodes {
        eventually(
            Duration::from_secs(10),
            "all nodes see each other",
            || async { live_count(node).await == n },
        )
        .await;
    }
}

/// The member ids `node` lists in `/admin/cluster`.
pub async fn member_ids(node: &Proc) -> Vec<String> {
    admin(node).await["cluster"]["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
