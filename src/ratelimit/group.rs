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
//! * A config reload ([`retune`]) keeps the groups: a tenant keeps its group, a new tenant joins its
//!   slot's group, and a new tenant whose slot has none (the groups were fixed at start) joins the
//!   group of the **nearest** slot in use ([`group_for`]): slots are assigned to shards in ranges,
//!   so that is most likely a slot of the same shard. Should it not be, the tenant's calls still
//!   reach its own shard (the client routes by key); only its breaker is shared with that group's.
//!   A restart gives it a group of its own. Tenants with a budget but no rate limits use the same
//!   mapping for their budget calls.

use super::breaker::Breaker;
use super::fallback::Fallback;
use super::local::Quotas;
use super::plan::Plan;
use crate::hash::redis_slot as slot;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;

pub(super) struct Group {
    /// `redis`, or `slot N` in a Redis Cluster.
    pub(super) label: String,
    /// The hash slot (cluster mode only).
    pub(super) slot: Option<u16>,
    /// The tenants with global limits it answers for (changed by a config reload).
    tenants: RwLock<Vec<String>>,
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
            slot: sharded.then_some(s),
            tenants: RwLock::new(tenants),
            breaker: Breaker::new(breaker_failures),
            fallback: Fallback::new(members, live_nodes),
            unsettled: AtomicBool::new(false),
            probe_key: probe_key.filter(|_| sharded),
        });
    }
    if groups.is_empty() {
        groups.push(Group {
            label: "redis".into(),
            slot: None,
            tenants: RwLock::new(Vec::new()),
            breaker: Breaker::new(breaker_failures),
            fallback: Fallback::new(Vec::new(), live_nodes),
            unsettled: AtomicBool::new(false),
            probe_key: None,
        });
    }
    groups
}

impl Group {
    /// The tenants with global limits it answers for.
    pub(super) fn tenants(&self) -> Vec<String> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The group answering for hash slot `s`: its own, else (a slot first seen in a config reload) the
/// one of the nearest slot in use (ties to the lower slot); without slots (one server), the only
/// group.
pub(super) fn group_for(groups: &[Group], s: u16) -> usize {
    let distance = |g: &Group| {
        g.slot.map_or(0, |gs| {
            let d = gs.abs_diff(s);
            d.min(16384 - d)
        })
    };
    (0..groups.len())
        .min_by_key(|&i| (distance(&groups[i]), groups[i].slot))
        .unwrap_or(0)
}

/// The slot of `plan`'s keys.
pub(super) fn slot_of(plan: &Plan) -> u16 {
    slot(plan.keys[0].as_bytes())
}

/// A config reload: each group's tenants and fallback quotas from `quotas` (tenants with global
/// limits, each with the group its plan names in `plans`).
pub(super) fn retune(
    groups: &[Group],
    quotas: &[(String, Quotas)],
    plans: &HashMap<String, std::sync::Arc<Plan>>,
) {
    let mut members: Vec<Vec<(String, Quotas)>> = vec![Vec::new(); groups.len()];
    for (id, q) in quotas {
        if let Some(p) = plans.get(id) {
            members[p.group].push((id.clone(), *q));
        }
    }
    for (g, m) in groups.iter().zip(members) {
        *g.tenants.write().unwrap_or_else(|e| e.into_inner()) =
            m.iter().map(|(id, _)| id.clone()).collect();
        g.fallback.retune(m);
    }
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
        assert_eq!(g[0].tenants().len(), 4);
        assert!(g[0].probe_key.is_none());
        assert!(plans.values().all(|p| p.group == 0));

        let (q, mut plans) = setup(&ids);
        let g = build(true, q, &mut plans, 3, 1);
        assert_eq!(g.len(), 4, "a, b, c and d hash to different slots");
        for id in ids {
            let p = &plans[id];
            let group = &g[p.group];
            assert_eq!(group.tenants(), vec![id.to_string()]);
            assert_eq!(group.label, format!("slot {}", slot(id.as_bytes())));
            assert_eq!(group.probe_key.as_deref(), Some(p.keys[0].as_str()));
        }
    }

    #[test]
    fn a_slot_without_group_maps_to_the_nearest_one() {
        let (q, mut plans) = setup(&["a", "b", "c", "d"]);
        let g = build(true, q, &mut plans, 3, 1);
        for i in 0..g.len() {
            assert_eq!(group_for(&g, g[i].slot.unwrap()), i);
        }
        let s = g[0].slot.unwrap();
        assert_eq!(group_for(&g, s.wrapping_sub(1) % 16384), 0);
        let (q, mut plans) = setup(&["a"]);
        let one = build(false, q, &mut plans, 3, 1);
        assert_eq!(group_for(&one, 1234), 0);
    }

    #[test]
    fn no_tenants_still_one_group() {
        let g = build(true, Vec::new(), &mut HashMap::new(), 3, 2);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].fallback.divisor(), 2);
    }
}
