//! [`NodeInfo`] and [`Member`]: a node as gossiped, its keys parsed into typed values, and the fold
//! of chitchat's node states into one member per node id.

use super::keys::{self, NodeStatus};
use super::report::BackendReport;
use chitchat::{ChitchatId, NodeState};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub gossip_addr: SocketAddr,
    /// Start time in unix ms: grows on every restart.
    pub generation: u64,
}

impl NodeInfo {
    pub(super) fn from_chitchat_id(id: &ChitchatId) -> NodeInfo {
        NodeInfo {
            id: id.node_id.to_string(),
            gossip_addr: id.gossip_advertise_addr,
            generation: id.generation_id,
        }
    }
}

/// A node as last gossiped: its identity, lifecycle and parsed keys.
#[derive(Debug, Clone)]
pub struct Member {
    pub node: NodeInfo,
    pub is_self: bool,
    /// `false`: the failure detector considers it dead (kept for `/admin/cluster` until chitchat
    /// forgets it).
    pub live: bool,
    pub status: NodeStatus,
    /// Backend name → its latest report (values that do not decode are skipped with a debug log).
    pub reports: BTreeMap<String, BackendReport>,
    /// Every key-value the node publishes.
    pub values: BTreeMap<String, String>,
}

impl Member {
    /// Counts as a member: alive and not leaving.
    pub fn is_ready(&self) -> bool {
        self.live && self.status == NodeStatus::Ready
    }

    fn from_state(state: &NodeState, self_id: &ChitchatId) -> Member {
        let mut reports = BTreeMap::new();
        let mut values = BTreeMap::new();
        for (k, v) in state.key_values() {
            if let Some(backend) = keys::parse_backend_state_key(k) {
                match BackendReport::decode(v) {
                    Ok(r) => {
                        reports.insert(backend.to_string(), r);
                    }
                    Err(e) => {
                        tracing::debug!(node = %state.chitchat_id().node_id, backend, error = %e, "ignoring backend report")
                    }
                }
            }
            values.insert(k.to_string(), v.to_string());
        }
        Member {
            node: NodeInfo::from_chitchat_id(state.chitchat_id()),
            is_self: state.chitchat_id() == self_id,
            live: true,
            status: NodeStatus::parse(state.get(keys::STATUS)),
            reports,
            values,
        }
    }

    fn lifecycle(&self) -> &'static str {
        if self.live {
            self.status.as_str()
        } else {
            "dead"
        }
    }

    /// `{id, addr, generation, is_self, status, config_version}` for `/admin/cluster`.
    pub fn admin_json(&self) -> Value {
        json!({
            "id": self.node.id,
            "addr": self.node.gossip_addr.to_string(),
            "generation": self.node.generation,
            "is_self": self.is_self,
            "status": self.lifecycle(),
            "config_version": self.values.get(keys::CONFIG_VERSION),
        })
    }
}

impl Member {
    /// This node as a member before the first gossip round has parsed its keys.
    pub(super) fn new_self(node: NodeInfo) -> Member {
        Member {
            node,
            is_self: true,
            live: true,
            status: NodeStatus::Ready,
            reports: BTreeMap::new(),
            values: BTreeMap::new(),
        }
    }
}

/// One member per node id: the live entry with the highest generation, else the most recent dead
/// one. This node is always present and live.
pub(super) fn build_members(
    live: &BTreeMap<ChitchatId, NodeState>,
    dead: &[NodeInfo],
    self_id: &ChitchatId,
) -> Vec<Member> {
    let mut by_id: BTreeMap<String, Member> = BTreeMap::new();
    for state in live.values() {
        let m = Member::from_state(state, self_id);
        match by_id.get(&m.node.id) {
            Some(prev) if prev.node.generation >= m.node.generation => {}
            _ => {
                by_id.insert(m.node.id.clone(), m);
            }
        }
    }
    let self_node = NodeInfo::from_chitchat_id(self_id);
    if by_id
        .get(&self_node.id)
        .is_none_or(|m| m.node.generation < self_node.generation)
    {
        by_id.insert(self_node.id.clone(), Member::new_self(self_node));
    }
    for node in dead {
        let newer = by_id
            .get(&node.id)
            .is_some_and(|m| m.live || m.node.generation >= node.generation);
        if !newer {
            by_id.insert(
                node.id.clone(),
                Member {
                    node: node.clone(),
                    is_self: false,
                    live: false,
                    status: NodeStatus::Ready,
                    reports: BTreeMap::new(),
                    values: BTreeMap::new(),
                },
            );
        }
    }
    by_id.into_values().collect()
}
