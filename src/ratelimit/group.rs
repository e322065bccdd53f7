//! Breaker groups: the tenants whose buckets one Redis server answers for, each group with its own
//! circuit breaker and local fallback, so a server that fails sends only its own tenants to the
//! fallback.
//!
//! * `single` and `sentinel`: one server holds every bucket, so one group holds every tenant.
//! * `cluster`: one group per **hash slot** in use (tenants whose `{tenant}` tags hash alike share
//!   one). A slot is the unit Redis Cluster moves: resharding moves slots between shards and a
//!   failover hands a shard's slots to its replica, so at any moment one primary answers for a whole
//!   group and no group mixes tenants of two shards. Groups are fixed by the config (at most one per
//!   limited tenant, never more than 16384) and never depend on the topology: a group opens after
//!   `breaker_failures` failed calls of its own. Every `breaker_open_ms` a few open groups are probed
//!   in turn (`EXISTS` on one of their keys, routed to their slot); when one answers, all open
//!   groups are, and those whose shard answers return to global. (Each probe of a dead shard makes
//!   the cluster client refresh its slot map, which holds calls to every shard for a moment: hence
//!   a few per round, not one per group.)

use super::breaker::Breaker;
use super::fallback::Fallback;
use super::local::Quotas;
use super::plan::Plan;
use crate::hash::redis_slot as slot;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;

pub(super) struct Group {
    /// `redis`, or `slot N` in a Redis Cluster.
    pub(super) label: String,
    pub(super) tenants: Vec<String>,
    pub(super) breaker: Breaker,
    pub(super) fallback: Fallback,
    /// A failed call was answered by this group's fallback since the last charge of its spend.
    pub(super) unsettled: AtomicBool,
    /// A key of the group's slot, for probes (a cluster routes it to the shard serving the slot).
    pub(super) probe_key: Option<String>,
}

/// Split the tenants with global limits into groups (one, or one per hash slot when `sharded`) and
/// point each plan at its group. Tenants without limits (no plan) never reach Redis nor the fallback.
pub(super) fn build(
    sharded: bool,
    quotas: Vec<(String, Quotas)>,
    plans: &mut HashMap<String, Plan>,
    breaker_failures: u32,
    live_nodes: usize,
) -> Vec<Group> {
    let mut by_slot: BTreeMap<u16, Vec<(String, Quotas)>> = BTreeMap::new();
    for (id, q) in quotas {
        let Some(p) = plans.get(&id) else { continue };
        let s = if sharded {
            slot(p.keys[0].as_bytes())
        } else {
            0
        };
        by_slot.entry(s).or_default().push((id, q));
    }
    let mut groups = Vec::with_capacity(by_slot.len().max(1));
    for (s, members) in by_slot {
        let index = groups.len();
        let tenants: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
        for id in &tenants {
            if let Some(p) = plans.get_mut(id) {
                p.group = index;
            }
        }
        let probe_key = tenants
            .iter()
            .find_map(|id| plans.get(id))
            .map(|p| p.keys[0].clone());
        groups.push(Group {
            label: if sharded {
                format!("slot {s}")
            } else {
                "redis".into()
            },
            tenants,
            breaker: Breaker::new(breaker_failures),
            fallback: Fallback::new(members, live_nodes),
            unsettled: AtomicBool::new(false),
            probe_key: probe_key.filter(|_| sharded),
        });
    }
    if groups.is_empty() {
        groups.push(Group {
            label: "redis".into(),
            tenants: Vec::new(),
            breaker: Breaker::new(breaker_failures),
            fallback: Fallback::new(Vec::new(), live_nodes),
            unsettled: AtomicBool::new(false),
            probe_key: None,
        });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> Quotas {
        Quotas {
            requests_per_minute: Some(60),
            burst: None,
            tokens_per_minute: None,
        }
    }

    fn setup(ids: &[&str]) -> (Vec<(String, Quotas)>, HashMap<String, Plan>) {
        let quotas: Vec<_> = ids.iter().map(|id| (id.to_string(), quota())).collect();
        let plans = ids
            .iter()
            .map(|id| (id.to_string(), Plan::new("p", id, &quota()).unwrap()))
            .collect();
        (quotas, plans)
    }

    #[test]
    fn one_group_for_one_server_one_per_slot_for_a_cluster() {
        let ids = ["a", "b", "c", "d"];
        let (q, mut plans) = setup(&ids);
        let g = build(false, q, &mut plans, 3, 1);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].tenants.len(), 4);
        assert!(g[0].probe_key.is_none());
        assert!(plans.values().all(|p| p.group == 0));

        let (q, mut plans) = setup(&ids);
        let g = build(true, q, &mut plans, 3, 1);
        assert_eq!(g.len(), 4, "a, b, c and d hash to different slots");
        for id in ids {
            let p = &plans[id];
            let group = &g[p.group];
            assert_eq!(group.tenants, vec![id.to_string()]);
            assert_eq!(group.label, format!("slot {}", slot(id.as_bytes())));
            assert_eq!(group.probe_key.as_deref(), Some(p.keys[0].as_str()));
        }
    }

    #[test]
    fn no_tenants_still_one_group() {
        let g = build(true, Vec::new(), &mut HashMap::new(), 3, 2);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].fallback.divisor(), 2);
    }
}
