//! The cluster limiter: global per-tenant buckets in Redis, with a visible, bounded fallback to
//! local limits.
//!
//! * **Global mode** (breaker closed): each [`RateLimiter::check`] is one `EVALSHA` of
//!   `lua/token_bucket.lua` over a shared multiplexed connection, bounded by `timeout_ms`: it admits,
//!   books a later slot within the request's wait budget, or refuses. All bucket maths run in Lua
//!   against Redis `TIME`; Rust never reads-then-writes a bucket.
//! * **Fallback mode** (breaker open): no Redis calls for the tenants behind the open breaker. Each tenant's quota divided by the live
//!   node count, in a [`LocalLimiter`] that starts from this node's share of the last known global
//!   level (empty at start-up), never from full buckets.
//! * A failed or slow call answers *that* request from the fallback at once and counts a failure;
//!   `breaker_failures` consecutive failures open the breaker. A background task then reconnects and
//!   probes every `breaker_open_ms` (connection set-up, script load and a `PING` within the per-call
//!   budget) and closes the breaker when Redis answers. Connecting never happens on the request path:
//!   the limiter starts in fallback and the same task brings it to global mode.
//! * After Redis refuses a tenant, the node refuses it locally until the retry-after passes (the
//!   over-limit cache), without calling Redis.
//!
//! * **Topology** (`topology`, `group`): one server, a Redis Cluster or a Sentinel-watched primary.
//!   Breaker and fallback are per group of tenants one server answers for: one group for `single`
//!   and `sentinel`, one per hash slot in a cluster, so a failing shard sends only its tenants to
//!   the fallback. The limiter is `partial` while some groups are in fallback and others not.
//!
//! Metrics: `sluice_limiter_mode{mode}` (1 current, 0 other), `sluice_limiter_fallback_tenants`, `sluice_limiter_redis_calls_total`,
//! `sluice_limiter_redis_errors_total{kind=timeout|error}`, `sluice_limiter_cache_hits_total`,
//! `sluice_limiter_fallback_divisor`. One log line per mode change.

use super::budget::Budgets;
use super::group::{self, Group};
use super::local::Quotas;
use super::overlimit::OverLimitCache;
use super::plan::Plan;
use super::topology::{Conn, Connector};
use super::{
    BudgetFuture, BudgetHold, LimitFuture, LimitRequest, RateLimiter, ReconcileFuture, ReportFuture,
};
use crate::config::TenantConfig;
use ::redis::Script;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The limiter's state, shared by the request path and its background tasks.
pub(super) struct Inner {
    pub(super) connector: Connector,
    /// The mode and its URLs without passwords, for logs.
    pub(super) url: String,
    /// Per-call budget.
    pub(super) timeout: Duration,
    /// Background connection set-up budget.
    pub(super) connect_timeout: Duration,
    /// Breaker open this long before each probe.
    pub(super) open_for: Duration,
    /// Per tenant; swapped whole by a config reload ([`RateLimiter::retune`]).
    pub(super) plans: ArcSwap<HashMap<String, Arc<Plan>>>,
    pub(super) key_prefix: String,
    pub(super) conn: RwLock<Option<Conn>>,
    /// Breaker and fallback per group of tenants one server answers for (see `group`); a plan
    /// names its group.
    pub(super) groups: Vec<Group>,
    /// Woken when a breaker opens, so the supervisor probes (and, with one server, reconnects).
    pub(super) opened: Notify,
    pub(super) cache: OverLimitCache,
    pub(super) calls: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) check_script: Script,
    pub(super) reconcile_script: Script,
    pub(super) adjust_script: Script,
    /// Set once the first connection attempt is over (either way): until then a request waits for
    /// it (bounded by the connect budget) rather than meet the empty start-up fallback.
    pub(super) settled: watch::Sender<bool>,
    /// Spend budgets (`lua/budget.lua`, with their own fallback share, one for every group: a
    /// tenant's budget calls follow its group's breaker).
    pub(super) budgets: Budgets,
}

impl Inner {
    /// The group answering for `tenant` (its plan's; for a tenant without rate limits, e.g. with a
    /// budget only, the group of its slot, or the nearest: see `group`).
    pub(super) fn group_of(&self, tenant: &str) -> usize {
        if let Some(p) = self.plan(tenant) {
            return p.group;
        }
        let key = &super::plan::bucket_keys(&self.key_prefix, tenant)[0];
        group::group_for(&self.groups, crate::hash::redis_slot(key.as_bytes()))
    }
}

/// Global limits in Redis shared by every node, local limits (÷ live nodes) when Redis is away.
pub struct ClusterLimiter {
    pub(super) inner: Arc<Inner>,
    /// Dropped with the limiter: the background tasks see the channel close and stop.
    pub(super) _shutdown: watch::Sender<()>,
}

impl ClusterLimiter {
    /// Redis calls made on the request path (checks and reconciles; background probes not counted).
    pub fn redis_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Failed or timed-out Redis calls on the request path.
    pub fn redis_errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// The live node count the fallback quotas are currently divided by.
    pub fn fallback_divisor(&self) -> usize {
        self.inner.groups[0].fallback.divisor()
    }

    /// Tenants currently answered by the local fallback (all of them while Redis is away; in a Redis
    /// Cluster, those of the slots whose shard is failing).
    pub fn fallback_tenants(&self) -> Vec<String> {
        self.inner.fallback_tenants()
    }

    /// The Redis keys this limiter uses for `tenant` (None: tenant without limits).
    pub fn keys_of(&self, tenant: &str) -> Option<[String; 2]> {
        self.inner.plan(tenant).map(|p| p.keys.clone())
    }
}

impl RateLimiter for ClusterLimiter {
    fn check<'a>(&'a self, req: LimitRequest<'a>) -> LimitFuture<'a> {
        Box::pin(self.inner.check(req))
    }

    fn reconcile<'a>(&'a self, tenant: &'a str, reserved: u64, actual: u64) -> ReconcileFuture<'a> {
        Box::pin(self.inner.reconcile(tenant, reserved, actual))
    }

    fn release<'a>(&'a self, tenant: &'a str, requests: u32, tokens: u64) -> ReconcileFuture<'a> {
        Box::pin(self.inner.release(tenant, requests, tokens))
    }

    fn budget<'a>(&'a self, tenant: &'a str, cost: u64) -> BudgetFuture<'a> {
        Box::pin(self.inner.budget_take(tenant, cost))
    }

    fn settle_budget<'a>(&'a self, hold: &'a BudgetHold, actual: u64) -> ReconcileFuture<'a> {
        Box::pin(self.inner.budget_settle(hold, actual))
    }

    fn spend_report(&self) -> ReportFuture<'_> {
        Box::pin(self.inner.spend_report())
    }

    fn retune(&self, tenants: &[TenantConfig]) {
        let quotas: Vec<(String, Quotas)> = tenants
            .iter()
            .map(|t| (t.id.clone(), Quotas::of(t)))
            .collect();
        let inner = &self.inner;
        let old = inner.plans.load_full();
        let plans: HashMap<String, Arc<Plan>> = quotas
            .iter()
            .filter_map(|(id, q)| {
                let kept = old.get(id).filter(|p| p.quotas == *q).cloned();
                kept.or_else(|| {
                    let mut p = Plan::new(&inner.key_prefix, id, q)?;
                    // A tenant keeps its group; a new one gets its slot's (see `group`).
                    p.group = old.get(id).map_or_else(
                        || group::group_for(&inner.groups, group::slot_of(&p)),
                        |o| o.group,
                    );
                    Some(Arc::new(p))
                })
                .map(|p| (id.clone(), p))
            })
            .collect();
        group::retune(&inner.groups, &quotas, &plans);
        inner.plans.store(Arc::new(plans));
        inner.publish_mode();
    }

    fn mode(&self) -> &'static str {
        self.inner.mode()
    }

    fn fallback_tenants(&self) -> Vec<String> {
        self.inner.fallback_tenants()
    }
}
