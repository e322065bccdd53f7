//! The live-members watcher: follows chitchat's live-nodes watcher, publishes the member list and
//! the live count, and logs and counts joins, leaves and restarts.

use super::keys::NodeStatus;
use super::member::{Member, NodeInfo, build_members};
use crate::observe::Metrics;
use chitchat::{Chitchat, ChitchatId, NodeState};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Follow chitchat's live-nodes watcher until `stop`; publish members and the live count; log and
/// count joins, leaves and restarts.
pub(super) async fn follow(
    mut watcher: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    self_id: ChitchatId,
    members_tx: watch::Sender<Arc<Vec<Member>>>,
    count_tx: watch::Sender<usize>,
    stop: CancellationToken,
) {
    let mut ready: BTreeMap<String, NodeInfo> = BTreeMap::new();
    loop {
        let dead: Vec<NodeInfo> = {
            let c = chitchat.lock().await;
            c.dead_nodes().map(NodeInfo::from_chitchat_id).collect()
        };
        let members = {
            let live = watcher.borrow_and_update();
            build_members(&live, &dead, &self_id)
        };
        let now_ready: BTreeMap<String, NodeInfo> = members
            .iter()
            .filter(|m| m.is_ready())
            .map(|m| (m.node.id.clone(), m.node.clone()))
            .collect();
        log_changes(&ready, &now_ready, &members, &self_id);
        let count = now_ready.len();
        ready = now_ready;
        Metrics::cluster_members(count);
        count_tx.send_if_modified(|c| std::mem::replace(c, count) != count);
        members_tx.send_replace(Arc::new(members));
        tokio::select! {
            changed = watcher.changed() => if changed.is_err() { break },
            _ = stop.cancelled() => break,
        }
    }
}

fn log_changes(
    before: &BTreeMap<String, NodeInfo>,
    after: &BTreeMap<String, NodeInfo>,
    members: &[Member],
    self_id: &ChitchatId,
) {
    for (id, node) in after {
        if **id == *self_id.node_id {
            continue;
        }
        match before.get(id) {
            None => {
                tracing::info!(node = %id, addr = %node.gossip_addr, generation = node.generation, "cluster member joined");
                count_change("joined");
            }
            Some(prev) if prev.generation != node.generation => {
                tracing::info!(node = %id, addr = %node.gossip_addr, generation = node.generation, previous_generation = prev.generation, "cluster member restarted");
                count_change("restarted");
            }
            Some(_) => {}
        }
    }
    for (id, node) in before {
        if after.contains_key(id) || **id == *self_id.node_id {
            continue;
        }
        let reason = match members.iter().find(|m| m.node.id == *id) {
            Some(m) if m.live && m.status == NodeStatus::Leaving => "leaving",
            _ => "unreachable",
        };
        tracing::info!(node = %id, addr = %node.gossip_addr, generation = node.generation, reason, "cluster member left");
        count_change("left");
    }
}

fn count_change(change: &'static str) {
    Metrics::membership_change(change);
}
