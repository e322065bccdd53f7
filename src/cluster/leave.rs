//! Leaving: a graceful [`Cluster::leave`] announces `status=leaving` first; dropping the cluster
//! stops gossip abruptly.

use super::keys::{self, NodeStatus};
use super::membership::Cluster;
use std::net::SocketAddr;
use std::time::Duration;

/// Most time [`Cluster::leave`] waits for its `leaving` status to reach the peers.
const LEAVE_WAIT_MAX: Duration = Duration::from_secs(2);

impl Cluster {
    /// Leave gracefully: gossip `status=leaving` to the live peers (they stop counting this node
    /// within a gossip round, without waiting for the failure detector), wait about two gossip
    /// rounds (at most 2 s) for it to spread, then stop gossip and every task of this module.
    pub async fn leave(mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let peers: Vec<SocketAddr> = self
            .shared
            .members()
            .iter()
            .filter(|m| m.live && !m.is_self)
            .map(|m| m.node.gossip_addr)
            .collect();
        handle
            .with_chitchat(|c| {
                c.self_node_state()
                    .set(keys::STATUS, NodeStatus::Leaving.as_str())
            })
            .await;
        if !peers.is_empty() {
            // Syn → SynAck → Ack: the Ack carries our new status to each peer right away.
            for peer in &peers {
                let _ = handle.gossip(*peer);
            }
            let wait = (self.shared.gossip_interval * 2).min(LEAVE_WAIT_MAX);
            tokio::time::sleep(wait).await;
        }
        self.shared.stop.cancel();
        if let Err(e) = handle.shutdown().await {
            tracing::warn!(error = %e, "gossip did not stop cleanly");
        }
        tracing::info!(node = %self.shared.self_node.id, peers = peers.len(), "left gossip cluster");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.initiate_shutdown();
        }
    }
}
