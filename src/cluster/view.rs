//! [`ClusterView`]: the cluster-wide [`BackendView`]. The merge rule is in [`super::merge`].
//!
//! A task refolds the live peers' reports into one [`PeerAggregate`] per backend every gossip
//! interval and whenever membership or a peer's keys change; [`BackendView::status`] then only
//! reads this node's own status and that aggregate under a short read lock: no gossip state, no
//! allocation on the request path. Peers that are leaving or dead do not count; neither does this
//! node's own gossiped report (its live status is used instead). When the cluster stops, the view
//! falls back to this node's own knowledge.

use super::membership::{Cluster, Member, Shared};
use super::merge::{PeerAggregate, Rules, aggregate, merge};
use super::quota::{self, PeerQuota};
use super::report::{BackendReport, target_id, unix_now_ms};
use crate::balance::quota::Basis;
use crate::balance::{Backend, BackendStatus, BackendTable, BackendView};
use serde_json::{Value, json};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Instant;
use tokio::time::MissedTickBehavior;

/// Local status merged with the live peers' fresh reports.
pub struct ClusterView {
    shared: Arc<Shared>,
    table: BackendTable,
    /// Indexed by `Backend::id`.
    peers: RwLock<Vec<PeerAggregate>>,
    /// The peers' quota observations, indexed by `Backend::id`.
    quotas: RwLock<Vec<PeerQuota>>,
}

impl ClusterView {
    /// Build the view over `table` and start its refresh task (it stops with the cluster or when
    /// the view is dropped). Needs a Tokio runtime.
    pub fn new(cluster: &Cluster, table: BackendTable) -> Arc<ClusterView> {
        let view = Arc::new(ClusterView {
            shared: cluster.shared().clone(),
            table,
            peers: RwLock::new(Vec::new()),
            quotas: RwLock::new(Vec::new()),
        });
        view.refresh(&view.shared.members(), Instant::now(), unix_now_ms());
        tokio::spawn(refresh_loop(Arc::downgrade(&view), view.shared.clone()));
        view
    }

    /// Refold the peers' reports. `now` and `now_unix_ms` are the same moment.
    fn refresh(&self, members: &[Member], now: Instant, now_unix_ms: u64) {
        let len = self.table.iter().map(|b| b.id + 1).max().unwrap_or(0);
        let mut next = vec![PeerAggregate::default(); len];
        for b in self.table.iter() {
            let reports = peers(members).filter_map(|m| m.reports.get(b.name()));
            let rules = Rules {
                target: target_id(&b.cfg.url.value),
                max_cooldown: self.shared.max_cooldown,
            };
            next[b.id] = aggregate(reports, rules, now, now_unix_ms);
        }
        *self.peers.write().unwrap_or_else(PoisonError::into_inner) = next;
        let mut quotas = vec![PeerQuota::default(); len];
        for b in self.table.iter() {
            quotas[b.id] = quota::fold(peers(members), b.name(), now_unix_ms);
        }
        *self.quotas.write().unwrap_or_else(PoisonError::into_inner) = quotas;
    }

    /// Forget the peers: local knowledge only.
    fn clear(&self) {
        self.peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.quotas
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The peers' aggregate for one backend (a copy, for inspection).
    pub fn peer_aggregate(&self, backend: &Backend) -> Option<PeerAggregate> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(backend.id)
            .cloned()
    }

    /// `/admin/cluster`: the members and, per backend, the merged view and every live node's report.
    ///
    /// ```json
    /// {"cluster_id": "sluice", "self": "n1", "live_count": 2,
    ///  "members": [{"id": "n1", "addr": "10.0.0.1:7946", "generation": 1764000000000,
    ///               "is_self": true, "status": "ready"}],
    ///  "backends": [{"name": "openai-basic",
    ///                "merged": {"available": true, "healthy": true, "in_flight": 4,
    ///                           "latency_ms": 120.5, "ttft_ms": null, "cooldown_remaining_ms": 0,
    ///                           "voters": 2},
    ///                "reports": [{"node": "n1", "is_self": true, "healthy": true,
    ///                             "latency_ms": 118.0, "ttft_ms": null, "in_flight": 1,
    ///                             "cooldown_until_ms": 0, "age_ms": 0, "counted": true}]}]}
    /// ```
    /// `counted`: the report takes part in the merge (fresh, from a ready live node). Each backend
    /// also has `quota`: the observation this node paces by (see [`super::quota`]), or null.
    pub fn admin_json(&self) -> Value {
        let now = Instant::now();
        let now_ms = unix_now_ms();
        let members = self.shared.members();
        let mut out = self.shared.admin_members_json();
        let backends: Vec<Value> = self
            .table
            .iter()
            .map(|b| {
                let local = b.local_status(now);
                let merged = self.status(b, now);
                let voters = self.peer_aggregate(b).map_or(0, |p| p.voters)
                    + u32::from(local.probed || !local.healthy);
                let mut reports = vec![report_json(
                    &self.shared.self_node.id,
                    true,
                    &BackendReport::from_status(&local, now, now_ms)
                        .with_evidence(b.sent(), target_id(&b.cfg.url.value)),
                    now_ms,
                    true,
                )];
                for m in members.iter().filter(|m| m.live && !m.is_self) {
                    if let Some(r) = m.reports.get(b.name()) {
                        let counted = m.is_ready() && r.is_fresh(now_ms);
                        reports.push(report_json(&m.node.id, false, r, now_ms, counted));
                    }
                }
                let quota = self
                    .quota(b, now_ms)
                    .map(|q| q.to_json(b.quota_sent_since(q.obs.at_ms), now_ms));
                json!({
                    "name": b.name(),
                    "merged": status_json(&merged, now, voters),
                    "reports": reports,
                    "quota": quota,
                })
            })
            .collect();
        out["backends"] = Value::Array(backends);
        out
    }
}

impl BackendView for ClusterView {
    fn status(&self, backend: &Backend, now: Instant) -> BackendStatus {
        let local = backend.local_status(now);
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        match peers.get(backend.id) {
            Some(p) if p.reporters > 0 => merge(&local, p, now),
            _ => local,
        }
    }

    fn quota(&self, backend: &Backend, now_ms: u64) -> Option<Basis> {
        let local = backend.local_quota(now_ms);
        let quotas = self.quotas.read().unwrap_or_else(PoisonError::into_inner);
        let peers = quotas.get(backend.id).copied().unwrap_or_default();
        quota::basis(local, &peers)
    }
}

/// Peers whose reports count: live, not leaving, not this node.
fn peers(members: &[Member]) -> impl Iterator<Item = &Member> {
    members.iter().filter(|m| m.is_ready() && !m.is_self)
}

async fn refresh_loop(view: Weak<ClusterView>, shared: Arc<Shared>) {
    let mut members = shared.members.clone();
    let mut tick = tokio::time::interval(shared.gossip_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let stopped = tokio::select! {
            _ = shared.stop.cancelled() => true,
            changed = members.changed() => changed.is_err(),
            _ = tick.tick() => false,
        };
        let Some(view) = view.upgrade() else {
            return;
        };
        if stopped {
            view.clear();
            return;
        }
        let snapshot = members.borrow_and_update().clone();
        view.refresh(&snapshot, Instant::now(), unix_now_ms());
    }
}

fn status_json(s: &BackendStatus, now: Instant, voters: u32) -> Value {
    let cooldown_ms = s
        .cooldown_until
        .map_or(0, |c| c.saturating_duration_since(now).as_millis());
    json!({
        "available": s.available,
        "healthy": s.healthy,
        "in_flight": s.in_flight,
        "latency_ms": s.latency_ms,
        "ttft_ms": s.ttft_ms,
        "cooldown_remaining_ms": cooldown_ms,
        "voters": voters,
    })
}

fn report_json(node: &str, is_self: bool, r: &BackendReport, now_ms: u64, counted: bool) -> Value {
    json!({
        "node": node,
        "is_self": is_self,
        "healthy": r.healthy,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "in_flight": r.in_flight,
        "cooldown_until_ms": r.cooldown_until_ms,
        "sent": r.sent,
        "age_ms": r.age(now_ms).as_millis(),
        "counted": counted,
    })
}
