//! The live-members watcher: follows chitchat's live-nodes watcher, publishes the member list, the
//! live count and the count the rate limiter divides by ([`Divisor`]: each round it also notes
//! whether any peer's heartbeat advanced), and logs and counts joins, leaves and restarts.

use super::divisor::Divisor;
use super::keys::NodeStatus;
use super::member::{Member, NodeInfo, build_members};
use crate::observe::Metrics;
use chitchat::{Chitchat, ChitchatId, Heartbeat, NodeState};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where the watcher publishes.
pub(super) struct Outputs {
    pub members: watch::Sender<Arc<Vec<Member>>>,
    pub live_count: watch::Sender<usize>,
    pub divisor: watch::Sender<usize>,
}

/// Follow chitchat's live-nodes watcher until `stop`; publish members, the live count and the
/// divisor (re-checked every `round` too, as silence changes nothing in the live set at first); log
/// and count joins, leaves and restarts.
pub(super) async fn follow(
    mut watcher: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    self_id: ChitchatId,
    out: Outputs,
    mut divisor: Divisor,
    round: Duration,
    stop: CancellationToken,
) {
    let mut ready: BTreeMap<String, NodeInfo> = BTreeMap::new();
    let mut heartbeats: HashMap<ChitchatId, Heartbeat> = HashMap::new();
    let mut tick = tokio::time::interval(round);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut members_changed = true;
    loop {
        let (heard, dead) = {
            let c = chitchat.lock().await;
            let heard = peers_heard(&c, &self_id, &mut heartbeats);
            let dead: Vec<NodeInfo> = if members_changed {
                c.dead_nodes().map(NodeInfo::from_chitchat_id).collect()
            } else {
                Vec::new()
            };
            (heard, dead)
        };
        if heard {
            divisor.heard(Instant::now());
        }
        if members_changed {
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
            out.live_count
                .send_if_modified(|c| std::mem::replace(c, count) != count);
            out.members.send_replace(Arc::new(members));
        }
        let n = divisor.divisor(ready.len(), Instant::now());
        out.divisor.send_if_modified(|d| {
            let previous = std::mem::replace(d, n);
            if previous != n {
                tracing::debug!(
                    divisor = n,
                    previous,
                    live = ready.len(),
                    "cluster: limiter divisor changed"
                );
            }
            previous != n
        });
        tokio::select! {
            changed = watcher.changed() => {
                if changed.is_err() { break }
                members_changed = true;
            }
            _ = tick.tick() => members_changed = false,
            _ = stop.cancelled() => break,
        }
    }
}

/// Whether any peer's heartbeat advanced (or a new peer appeared) since the last call; `seen` keeps
/// the heartbeats of the node states chitchat still holds.
fn peers_heard(
    c: &Chitchat,
    self_id: &ChitchatId,
    seen: &mut HashMap<ChitchatId, Heartbeat>,
) -> bool {
    let states = c.node_states();
    seen.retain(|id, _| states.contains_key(id));
    let mut heard = false;
    for (id, state) in states {
        if id == self_id {
            continue;
        }
        let hb = state.heartbeat();
        match seen.insert(id.clone(), hb) {
            Some(prev) if prev >= hb => {}
            _ => heard = true,
        }
    }
    heard
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
