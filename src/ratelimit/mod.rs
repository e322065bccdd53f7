//! Rate limiting, the limiter seam used by Shape (Receive → **Shape** → Route → Balance → Deliver);
//! imports `crate::config` and records through `crate::observe` only. Every limit decision goes through [`RateLimiter`], so the cluster's
//! Redis limiter ([`ClusterLimiter`]) can replace the local one ([`LocalLimiter`]).
//!
//! A request that may wait asks once, with its wait budget: the limiter admits it now, books a later
//! slot within the budget (the bucket goes into debt, the caller sleeps until [`Decision::wait`]),
//! or refuses it. A booked request that gives up returns its slot ([`RateLimiter::release`]).
//!
//! The cluster limiter's rooms: `cluster_limiter` (the type), `setup` (config → limiter),
//! `topology` (single server, Redis Cluster or Sentinel), `group` (breaker and fallback per group
//! of tenants one server answers for), `script` (Lua scripts and Redis calls), `plan` (keys and script arguments), `reserve` (check and
//! reconcile), `switch` (breaker, fallback and the background tasks); beside them
//! `breaker`, `fallback`, `lease`, `overlimit` and the local limiter in `local`.

mod breaker;
mod bucket;
pub mod budget;
mod cluster_limiter;
mod contention;
mod fallback;
mod group;
mod lease;
mod local;
mod overlimit;
mod plan;
mod reserve;
mod script;
mod setup;
mod switch;
mod topology;

#[cfg(test)]
mod cluster_tests;

pub use budget::{BudgetDecision, BudgetHold, BudgetView, SpendReport};
pub use cluster_limiter::ClusterLimiter;
pub use local::LocalLimiter;
pub use plan::bucket_keys;
pub use script::{ADJUST_LUA, RECONCILE_LUA, TOKEN_BUCKET_LUA};
pub use setup::RedisLimitError;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What one request asks of its tenant's buckets.
#[derive(Debug, Clone, Copy)]
pub struct LimitRequest<'a> {
    pub tenant: &'a str,
    /// Requests to take from the request bucket (1 per call).
    pub requests: u32,
    /// Estimated LLM tokens to reserve from the token bucket (0 = no token limit applies).
    pub tokens: u64,
    /// How long the request may wait for its slot: a later slot within this is booked (zero: admit
    /// now or refuse).
    pub max_wait: Duration,
}

/// The limiter's verdict, with what the `x-ratelimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Decision {
    pub allowed: bool,
    /// Requests per minute for this tenant (None: no request limit).
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// When the request bucket is full again.
    pub reset: Duration,
    /// LLM tokens per minute for this tenant (None: no token limit).
    pub tokens_limit: Option<u64>,
    pub tokens_remaining: Option<u64>,
    /// When the token bucket is full again.
    pub tokens_reset: Duration,
    /// When to try again, if refused.
    pub retry_after: Option<Duration>,
    /// Admitted with a booked slot: it starts after this (zero: now).
    pub wait: Duration,
    /// The tenant's tightest spend budget (None: no budget).
    pub budget: Option<BudgetView>,
}

impl Decision {
    pub fn unlimited() -> Decision {
        Decision {
            allowed: true,
            ..Decision::default()
        }
    }
}

pub type ReconcileFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
pub type LimitFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;
pub type BudgetFuture<'a> = Pin<Box<dyn Future<Output = BudgetDecision> + Send + 'a>>;
pub type ReportFuture<'a> = Pin<Box<dyn Future<Output = SpendReport> + Send + 'a>>;

/// Per-tenant admission. Implementations must answer within a few milliseconds whatever their backing
/// store does (a dead store degrades to a local decision, never to an error).
pub trait RateLimiter: Send + Sync {
    /// Take from the tenant's buckets, or refuse with when to retry. A refusal takes nothing.
    fn check<'a>(&'a self, req: LimitRequest<'a>) -> LimitFuture<'a>;
    /// After the response: `reserved` tokens were taken at admission, `actual` were used. Returns the
    /// difference to the token bucket (or charges the overage, which may leave it in debt).
    fn reconcile<'a>(&'a self, tenant: &'a str, reserved: u64, actual: u64) -> ReconcileFuture<'a>;
    /// Give back what an admitted request took and will not use (a booked request that gave up
    /// before its slot started).
    fn release<'a>(&'a self, tenant: &'a str, requests: u32, tokens: u64) -> ReconcileFuture<'a>;
    /// The tenants' limits changed (a config reload): apply them from now on, keeping what each
    /// tenant's buckets hold (capped at the new capacity, never refilled); tenants no longer
    /// listed are forgotten, new ones start full.
    fn retune(&self, tenants: &[crate::config::TenantConfig]);
    /// `local`, `global`, `fallback` or `partial` (some tenants in fallback, the others global):
    /// shown in metrics and the admin endpoint.
    fn mode(&self) -> &'static str;
    /// The tenants answered by a local fallback instead of the global limits (admin endpoint).
    fn fallback_tenants(&self) -> Vec<String> {
        Vec::new()
    }
    /// Take `cost` micro-dollars (the request's estimated cost) from the tenant's spend budgets, or
    /// refuse taking nothing. Default: no budgets.
    fn budget<'a>(&'a self, tenant: &'a str, cost: u64) -> BudgetFuture<'a> {
        let _ = (tenant, cost);
        Box::pin(std::future::ready(BudgetDecision::unlimited()))
    }
    /// After the response: the request held `hold`, it actually cost `actual` micro-dollars (0: give
    /// it all back).
    fn settle_budget<'a>(&'a self, hold: &'a BudgetHold, actual: u64) -> ReconcileFuture<'a> {
        let _ = (hold, actual);
        Box::pin(std::future::ready(()))
    }
    /// Every budgeted tenant's spend, budget and reset (`/admin/tenants`).
    fn spend_report(&self) -> ReportFuture<'_> {
        Box::pin(std::future::ready(SpendReport::default()))
    }
}
