//! [`Cluster`]: the one owner of the chitchat handle. Joins, follows membership, writes this node's
//! keys, leaves.
//!
//! A task follows chitchat's live-nodes watcher (recomputed at the end of every gossip round when
//! the live set or a live node's keys change) and turns it into a [`Member`] list: one entry per
//! node id (the highest generation wins, so a restarted node is the same member coming back), keys
//! parsed into typed values. Nodes that announced `status=leaving` stop counting at once; silent
//! ones when the failure detector gives up on them (about `dead_after_ms`).

use super::ClusterError;
use super::keys::{self, NodeStatus};
use super::report::BackendReport;
use crate::config::ClusterConfig;
use chitchat::transport::Transport;
use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
    ProtocolVersion, spawn_chitchat,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Gauge: live members, this node included.
pub const MEMBERS_METRIC: &str = "sluice_cluster_members";
/// Counter, label `change` = joined / left / restarted.
pub const MEMBERSHIP_CHANGES_METRIC: &str = "sluice_cluster_membership_changes_total";

/// Most time [`Cluster::leave`] waits for its `leaving` status to reach the peers.
const LEAVE_WAIT_MAX: Duration = Duration::from_secs(2);

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub gossip_addr: SocketAddr,
    /// Start time in unix ms: grows on every restart.
    pub generation: u64,
}

impl NodeInfo {
    fn from_chitchat_id(id: &ChitchatId) -> NodeInfo {
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

    /// `{id, addr, generation, is_self, status}` for `/admin/cluster`.
    pub fn admin_json(&self) -> Value {
        json!({
            "id": self.node.id,
            "addr": self.node.gossip_addr.to_string(),
            "generation": self.node.generation,
            "is_self": self.is_self,
            "status": self.lifecycle(),
        })
    }
}

/// What the membership follower publishes; shared by the view and the publisher.
pub(super) struct Shared {
    pub cluster_id: String,
    pub self_node: NodeInfo,
    pub gossip_interval: Duration,
    pub chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    pub members: watch::Receiver<Arc<Vec<Member>>>,
    /// Cancelled when the cluster leaves or is dropped: every task of this module stops.
    pub stop: CancellationToken,
}

impl Shared {
    /// Write several of this node's keys under one lock.
    pub async fn set_many(&self, kvs: Vec<(String, String)>) {
        let mut chitchat = self.chitchat.lock().await;
        let state = chitchat.self_node_state();
        for (k, v) in kvs {
            state.set(k, v);
        }
    }

    pub fn members(&self) -> Arc<Vec<Member>> {
        self.members.borrow().clone()
    }

    pub fn admin_members_json(&self) -> Value {
        let members = self.members();
        json!({
            "cluster_id": self.cluster_id,
            "self": self.self_node.id,
            "live_count": members.iter().filter(|m| m.is_ready()).count(),
            "members": members.iter().map(Member::admin_json).collect::<Vec<_>>(),
        })
    }
}

/// Gossip membership. The only code in Sluice that touches chitchat.
///
/// Dropping it stops gossip abruptly (peers notice through the failure detector); [`Cluster::leave`]
/// announces the departure first.
pub struct Cluster {
    shared: Arc<Shared>,
    handle: Option<ChitchatHandle>,
    live_count: watch::Receiver<usize>,
}

impl Cluster {
    /// Start gossip on `cfg.gossip_listen` and join through `cfg.seeds` (`host:port`; DNS names are
    /// re-resolved by chitchat every minute). `transport`: `&chitchat::transport::UdpTransport` in
    /// production, a `ChannelTransport` in tests. Port 0 in `gossip_listen` picks a free UDP port.
    pub async fn join(
        cfg: &ClusterConfig,
        node_id: &str,
        transport: &dyn Transport,
    ) -> Result<Cluster, ClusterError> {
        if node_id.is_empty() {
            return Err(ClusterError::Config {
                field: "node.id",
                reason: "must not be empty".into(),
            });
        }
        let mut listen: SocketAddr =
            cfg.gossip_listen
                .parse()
                .map_err(|_| ClusterError::Config {
                    field: "cluster.gossip_listen",
                    reason: format!("`{}` is not ip:port", cfg.gossip_listen),
                })?;
        if listen.port() == 0 {
            listen.set_port(free_udp_port(listen)?);
        }
        let advertise = match &cfg.advertise {
            Some(a) => resolve(a).await?,
            None => listen,
        };
        if advertise.ip().is_unspecified() || advertise.port() == 0 {
            return Err(ClusterError::Config {
                field: "cluster.advertise",
                reason: format!("peers cannot reach `{advertise}`: set an address they can"),
            });
        }
        let gossip_interval = Duration::from_millis(cfg.gossip_interval_ms.max(1));
        let dead_after = Duration::from_millis(cfg.dead_after_ms.max(1));
        let chitchat_id = ChitchatId::new(node_id, next_generation(), advertise);
        let self_node = NodeInfo::from_chitchat_id(&chitchat_id);
        let config = ChitchatConfig {
            chitchat_id: chitchat_id.clone(),
            cluster_id: cfg.cluster_id.clone(),
            gossip_interval,
            listen_addr: listen,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: failure_detector_config(gossip_interval, dead_after),
            marked_for_deletion_grace_period: grace_period(dead_after),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
        };
        let initial = vec![(
            keys::STATUS.to_string(),
            NodeStatus::Ready.as_str().to_string(),
        )];
        let handle = spawn_chitchat(config, initial, transport)
            .await
            .map_err(|e| ClusterError::Start {
                addr: listen,
                reason: format!("{e:#}"),
            })?;
        let chitchat = handle.chitchat();
        let watcher = chitchat.lock().await.live_nodes_watcher();
        let self_member = Member {
            node: self_node.clone(),
            is_self: true,
            live: true,
            status: NodeStatus::Ready,
            reports: BTreeMap::new(),
            values: BTreeMap::new(),
        };
        let (members_tx, members_rx) = watch::channel(Arc::new(vec![self_member]));
        let (count_tx, count_rx) = watch::channel(1usize);
        metrics::gauge!(MEMBERS_METRIC).set(1.0);
        let stop = CancellationToken::new();
        tokio::spawn(follow(
            watcher,
            chitchat.clone(),
            chitchat_id,
            members_tx,
            count_tx,
            stop.clone(),
        ));
        tracing::info!(
            node = node_id,
            addr = %advertise,
            listen = %listen,
            generation = self_node.generation,
            cluster = %cfg.cluster_id,
            seeds = ?cfg.seeds,
            "joined gossip cluster"
        );
        Ok(Cluster {
            shared: Arc::new(Shared {
                cluster_id: cfg.cluster_id.clone(),
                self_node,
                gossip_interval,
                chitchat,
                members: members_rx,
                stop,
            }),
            handle: Some(handle),
            live_count: count_rx,
        })
    }

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

    /// Delete one of this node's keys (a tombstone that peers learn by gossip).
    pub async fn delete_self(&self, key: &str) {
        let mut chitchat = self.shared.chitchat.lock().await;
        let state = chitchat.self_node_state();
        if state.get(key).is_some() {
            state.delete(key);
        }
    }

    /// `{cluster_id, self, live_count, members: [{id, addr, generation, is_self, status}]}`.
    pub fn admin_json(&self) -> Value {
        self.shared.admin_members_json()
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

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

/// Phi-accrual tuning so a silent node is declared dead after about `dead_after`.
///
/// chitchat's phi is `time since the last new heartbeat / mean interval between new heartbeats`,
/// and a node is dead above `phi_threshold`. A node learns a peer's newer heartbeat about twice per
/// gossip round (from the peer's own Syn and from its SynAck, more via third parties); measured
/// over ChannelTransport with 2 to 8 nodes the mean settles near `gossip_interval / 2`. So the
/// prior (`initial_interval`, weighted as 5 samples) is `gossip_interval / 2`, and the threshold is
/// `(dead_after - one round) / (gossip_interval / 2)` (18 for the default 300 ms / 3 s): the
/// liveness check itself runs once per round. A slower network raises the mean and the timeout with
/// it (that is what phi accrual is for).
pub fn failure_detector_config(
    gossip_interval: Duration,
    dead_after: Duration,
) -> FailureDetectorConfig {
    let mean_heartbeat = (gossip_interval / 2).max(Duration::from_millis(1));
    let budget = dead_after.saturating_sub(gossip_interval).as_nanos() as f64;
    FailureDetectorConfig {
        phi_threshold: (budget / mean_heartbeat.as_nanos() as f64).clamp(2.0, 200.0),
        sampling_window_size: 200,
        max_interval: dead_after.max(gossip_interval * 2),
        initial_interval: mean_heartbeat,
        dead_node_grace_period: grace_period(dead_after),
    }
}

/// How long chitchat keeps a dead node's state and deleted keys' tombstones: 20 × `dead_after`
/// (a minute by default), at least 10 s. Long enough for every peer to learn of the deletion,
/// short enough that dead generations do not pile up.
fn grace_period(dead_after: Duration) -> Duration {
    (dead_after * 20).max(Duration::from_secs(10))
}

/// Start time in unix ms, strictly increasing within one process (tests restart nodes quickly).
fn next_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = super::report::unix_now_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

fn free_udp_port(listen: SocketAddr) -> Result<u16, ClusterError> {
    std::net::UdpSocket::bind(listen)
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError::Start {
            addr: listen,
            reason: e.to_string(),
        })
}

async fn resolve(addr: &str) -> Result<SocketAddr, ClusterError> {
    let err = |reason: String| ClusterError::Resolve {
        addr: addr.to_string(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| err(e.to_string()))?;
    addrs.next().ok_or_else(|| err("no address".into()))
}

/// Follow chitchat's live-nodes watcher until `stop`; publish members and the live count; log and
/// count joins, leaves and restarts.
async fn follow(
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
        metrics::gauge!(MEMBERS_METRIC).set(count as f64);
        count_tx.send_if_modified(|c| std::mem::replace(c, count) != count);
        members_tx.send_replace(Arc::new(members));
        tokio::select! {
            changed = watcher.changed() => if changed.is_err() { break },
            _ = stop.cancelled() => break,
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
        by_id.insert(
            self_node.id.clone(),
            Member {
                node: self_node,
                is_self: true,
                live: true,
                status: NodeStatus::Ready,
                reports: BTreeMap::new(),
                values: BTreeMap::new(),
            },
        );
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
    metrics::counter!(MEMBERSHIP_CHANGES_METRIC, "change" => change).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_detector_defaults() {
        let fd = failure_detector_config(Duration::from_millis(300), Duration::from_millis(3000));
        assert_eq!(fd.phi_threshold, 18.0);
        assert_eq!(fd.initial_interval, Duration::from_millis(150));
        assert_eq!(fd.dead_node_grace_period, Duration::from_secs(60));
        assert_eq!(fd.max_interval, Duration::from_millis(3000));
        // The smallest valid config (dead_after = 3 intervals) still gets a sane threshold.
        let fd = failure_detector_config(Duration::from_millis(10), Duration::from_millis(30));
        assert_eq!(fd.phi_threshold, 4.0);
        assert_eq!(fd.dead_node_grace_period, Duration::from_secs(10));
    }

    #[test]
    fn generations_grow() {
        let a = next_generation();
        let b = next_generation();
        assert!(b > a);
        assert!(a > 1_700_000_000_000, "start time in unix ms");
    }
}
