//! The balancer: owns the live backend table, the view of it (this node's, or merged with the
//! cluster's) and each route's selector state, and answers "which backend for this call, excluding
//! these". Callers never see candidates or algorithms.

use super::candidates::{self, Entry, Pool, Want};
use super::quota;
use super::{Backend, BackendTable, BackendView, InFlightGuard, PoolState, rendezvous, select};
use crate::route::RouteDecision;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct Balancer {
    backends: BackendTable,
    view: Arc<dyn BackendView>,
    /// Selector state (round-robin cursor, smooth weights) by route index.
    pools: Vec<Mutex<PoolState>>,
}

/// Why there is no backend for a call, when there is none to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survey {
    /// Some untried backend can take the call (now, or once a slot frees up).
    Available,
    /// No backend of the route serves this model and endpoint.
    NotServed,
    /// Every untried backend that serves the call is only cooling down after an upstream's
    /// Retry-After, or paced until its quota covers the call; the earliest is back at this instant.
    CoolingUntil(Instant),
    /// Nothing available (unhealthy, ejected, or all tried).
    Unavailable,
}

impl Balancer {
    /// `routes`: how many routes (rules plus the default) will ask.
    pub fn new(backends: BackendTable, view: Arc<dyn BackendView>, routes: usize) -> Balancer {
        Balancer {
            backends,
            view,
            pools: (0..routes).map(|_| Mutex::default()).collect(),
        }
    }

    pub fn backends(&self) -> &BackendTable {
        &self.backends
    }

    pub fn view(&self) -> &dyn BackendView {
        self.view.as_ref()
    }

    /// Whether any backend can take traffic at all (for readiness).
    pub fn any_available(&self) -> bool {
        let now = Instant::now();
        self.backends
            .iter()
            .any(|b| self.view.status(b, now).available)
    }

    fn pool(
        &self,
        route: &RouteDecision,
        want: &Want<'_>,
        tried: &[usize],
        capacity: bool,
    ) -> Pool {
        let now = Instant::now();
        let now_ms = quota::unix_now_ms();
        let need = want.units();
        let entries = route.pool.iter().map(|&id| {
            let b = &self.backends[id];
            let quota = self.view.quota(b, now_ms).map(|basis| {
                let a = quota::assess(&basis, b.quota_sent_since(basis.obs.at_ms), need, now_ms);
                b.note_pacing(&a);
                a
            });
            Entry {
                id,
                serves: b.cfg.serves(want.model)
                    && b.cfg.serves_endpoint(want.endpoint, want.needs_responses)
                    && want.pinned.is_none_or(|p| p == id),
                status: self.view.status(b, now),
                // The slot check uses this node's own in-flight count: the limit is per node.
                has_room: !capacity || b.has_room(b.in_flight(), want.priority),
                weight: b.cfg.weight,
                price: b.cfg.price,
                quota,
            }
        });
        candidates::filter(entries, want, tried, route.health_check, capacity, now)
    }

    /// Whether the call can be served by the route at all, ignoring load.
    pub fn survey(&self, route: &RouteDecision, want: &Want<'_>, tried: &[usize]) -> Survey {
        let pool = self.pool(route, want, tried, false);
        match (pool.any_serves, pool.any_available, pool.cooldown_end) {
            (false, _, _) => Survey::NotServed,
            (true, true, _) => Survey::Available,
            (true, false, Some(end)) => Survey::CoolingUntil(end),
            (true, false, None) => Survey::Unavailable,
        }
    }

    /// The backend for this call now, excluding `tried`, with a slot taken on it; None when every
    /// candidate is at its concurrency limit.
    pub fn take(
        &self,
        route: &RouteDecision,
        want: &Want<'_>,
        tried: &[usize],
    ) -> Option<(Arc<Backend>, InFlightGuard)> {
        let pool = self.pool(route, want, tried, true);
        let id = match want.affinity_key {
            Some(key) => rendezvous(key, &pool.cands)?,
            None => {
                let mut state = self.pools[route.index].lock().expect("pool state lock");
                select(route.algorithm, &pool.cands, &mut state, &mut || {
                    rand::random::<f64>()
                })?
            }
        };
        let b = self.backends[id].clone();
        let guard = b.try_start(want.priority)?;
        b.record_send(want.units(), quota::unix_now_ms());
        Some((b, guard))
    }
}
