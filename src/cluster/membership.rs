//! [`Cluster`]: the one owner of the chitchat handle. Joins, follows membership, writes this node's
//! keys, leaves.
//!
//! A task follows chitchat's live-nodes watcher (recomputed at the end of every gossip round when
//! the live set or a live node's keys change) and turns it into a [`Member`] list: one entry per
//! node id (the highest generation wins, so a restarted node is the same member coming back), keys
//! parsed into typed values. Nodes that announced `status=leaving` stop counting at once; silent
//! ones when the failure detector gives up on them (about `dead_after_ms`).
//!
//! The rooms: `join` (config and start), `watcher` (live members and their metrics), `member`
//! (the parsed member list), `self_keys` (key/value publishing), `leave`.

use chitchat::{Chitchat, ChitchatHandle};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use super::join::failure_detector_config;
pub use super::member::{Member, NodeInfo};

/// What the membership follower publishes; shared by the view and the publisher.
pub(super) struct Shared {
    pub cluster_id: String,
    pub self_node: NodeInfo,
    pub gossip_interval: Duration,
    /// `cluster.max_cooldown_ms`: the longest cooldown a peer's report can impose.
    pub max_cooldown: Duration,
    pub chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    pub members: watch::Receiver<Arc<Vec<Member>>>,
    /// What the limiter's fallback divides by (see [`super::divisor`]).
    pub divisor: watch::Receiver<usize>,
    /// Cancelled when the cluster leaves or is dropped: every task of this module stops.
    pub stop: CancellationToken,
}

impl Shared {
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.members.borrow().clone()
    }

    pub fn admin_members_json(&self) -> Value {
        let members = self.members();
        json!({
            "cluster_id": self.cluster_id,
            "self": self.self_node.id,
            "live_count": members.iter().filter(|m| m.is_ready()).count(),
            "divisor": *self.divisor.borrow(),
            "members": members.iter().map(Member::admin_json).collect::<Vec<_>>(),
        })
    }
}

/// Gossip membership. The only code in Sluice that touches chitchat.
///
/// Dropping it stops gossip abruptly (peers notice through the failure detector); [`Cluster::leave`]
/// announces the departure first.
pub struct Cluster {
    pub(super) shared: Arc<Shared>,
    pub(super) handle: Option<ChitchatHandle>,
    pub(super) live_count: watch::Receiver<usize>,
    pub(super) divisor: watch::Receiver<usize>,
}

impl Cluster {
    pub fn self_id(&self) -> &str {
        &self.shared.self_node.id
    }

    /// This node: id, advertised gossip address, generation.
    pub fn self_node(&self) -> &NodeInfo {
        &self.shared.self_node
    }

    pub fn gossip_interval(&self) -> Duration {
        self.shared.gossip_interval
    }

    /// Live members that are not leaving, this node included, sorted by id.
    pub fn live_nodes(&self) -> Vec<NodeInfo> {
        self.shared
            .members()
            .iter()
            .filter(|m| m.is_ready())
            .map(|m| m.node.clone())
            .collect()
    }

    /// Every member known: live, leaving and recently dead (see [`Member::live`]).
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.shared.members()
    }

    /// The number of live members (this node included), updated on every membership change.
    pub fn live_count_watch(&self) -> watch::Receiver<usize> {
        self.live_count.clone()
    }

    /// The member count the rate limiter's fallback divides by: the live count while gossip flows,
    /// the last stable count (at start the seed count) while it does not (see [`super::divisor`]).
    pub fn divisor_watch(&self) -> watch::Receiver<usize> {
        self.divisor.clone()
    }

    /// `{cluster_id, self, live_count, divisor, members: [{id, addr, generation, is_self, status}]}`.
    pub fn admin_json(&self) -> Value {
        self.shared.admin_members_json()
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
