//! Key/value publishing: this node writes and deletes its own gossip keys, and reads a live peer's.

use super::membership::{Cluster, Shared};

impl Shared {
    /// Write several of this node's keys under one lock.
    pub async fn set_many(&self, kvs: Vec<(String, String)>) {
        let mut chitchat = self.chitchat.lock().await;
        let state = chitchat.self_node_state();
        for (k, v) in kvs {
            state.set(k, v);
        }
    }
}

impl Cluster {
    /// A key as last gossiped by a live member (this node's own keys show up after a gossip round).
    pub fn node_value(&self, node_id: &str, key: &str) -> Option<String> {
        self.shared
            .members()
            .iter()
            .find(|m| m.live && m.node.id == node_id)
            .and_then(|m| m.values.get(key).cloned())
    }

    /// Publish one of this node's keys (a no-op when the value is unchanged).
    pub async fn set_self(&self, key: &str, value: String) {
        self.shared.set_many(vec![(key.to_string(), value)]).await;
    }

    /// Gossip the config version this node serves (at start and after every reload).
    pub async fn set_config_version(&self, version: &str) {
        self.set_self(super::keys::CONFIG_VERSION, version.to_string())
            .await;
    }

    /// Delete one of this node's keys (a tombstone that peers learn by gossip).
    pub async fn delete_self(&self, key: &str) {
        let mut chitchat = self.shared.chitchat.lock().await;
        let state = chitchat.self_node_state();
        if state.get(key).is_some() {
            state.delete(key);
        }
    }
}
