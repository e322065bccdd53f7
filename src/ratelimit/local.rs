//! The local limiter: per tenant, a request bucket (burst, then a sustained rate) and a token bucket
//! for LLM tokens, both [`Bucket`]s: the same maths as the Redis script, reservations included, so a
//! node alone and a cluster node in fallback admit and book the way the global limiter does.

use super::bucket::{Bucket, Take};
use super::budget::period::now_ms;
use super::budget::{BudgetPlan, Ledger};
use super::{
    BudgetDecision, BudgetFuture, BudgetHold, Decision, LimitFuture, LimitRequest, RateLimiter,
    ReconcileFuture, ReportFuture, SpendReport,
};
use crate::config::TenantConfig;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A tenant's quota, possibly scaled (a cluster node in fallback holds 1/N of the global rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    pub requests_per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

impl Quotas {
    pub fn of(t: &TenantConfig) -> Quotas {
        Quotas {
            requests_per_minute: t.limits.requests_per_minute,
            burst: t.limits.burst,
            tokens_per_minute: t.limits.tokens_per_minute,
        }
    }

    /// This quota divided among `n` nodes (at least 1 of everything).
    pub fn divided(self, n: usize) -> Quotas {
        let n = n.max(1);
        Quotas {
            requests_per_minute: self
                .requests_per_minute
                .map(|r| (r as usize).div_ceil(n).max(1) as u32),
            burst: self.burst.map(|b| (b as usize).div_ceil(n).max(1) as u32),
            tokens_per_minute: self.tokens_per_minute.map(|t| t.div_ceil(n as u64).max(1)),
        }
    }
}

/// Where a tenant's buckets start: `None` full, `Some(level)` at that level (may be negative: debt).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Levels {
    pub requests: Option<f64>,
    pub tokens: Option<f64>,
}

impl Levels {
    pub const FULL: Levels = Levels {
        requests: None,
        tokens: None,
    };
    pub const EMPTY: Levels = Levels {
        requests: Some(0.0),
        tokens: Some(0.0),
    };
}

/// What a tenant's local buckets admitted since the last look, and what they hold now.
#[derive(Debug, Clone, PartialEq)]
pub struct Spent {
    pub tenant: String,
    pub requests: f64,
    pub tokens: f64,
    pub levels: Levels,
}

struct TenantBuckets {
    /// What the buckets were built from.
    quotas: Quotas,
    /// Requests per minute and the request bucket (capacity = burst).
    requests: Option<(u32, Bucket)>,
    tokens: Option<Bucket>,
    /// What this limiter admitted (requests, tokens), net of what came back: a cluster node charges
    /// it to the global buckets when Redis returns.
    spent: Mutex<(f64, f64)>,
}

impl TenantBuckets {
    /// Buckets for `q` holding `start`; None for a quota without limits.
    fn new(q: Quotas, start: Levels) -> Option<TenantBuckets> {
        let requests = q.requests_per_minute.map(|rpm| {
            let burst = q.burst.unwrap_or(rpm.div_ceil(60).max(1)).max(1) as f64;
            let level = start.requests.unwrap_or(burst);
            (rpm, Bucket::new(burst, rpm as f64 / 60.0, level))
        });
        let tokens = q.tokens_per_minute.map(|tpm| {
            let cap = tpm as f64;
            Bucket::new(cap, cap / 60.0, start.tokens.unwrap_or(cap))
        });
        (requests.is_some() || tokens.is_some()).then(|| TenantBuckets {
            quotas: q,
            requests,
            tokens,
            spent: Mutex::default(),
        })
    }

    /// What the buckets hold at `now`.
    fn levels(&self, now: Instant) -> Levels {
        Levels {
            requests: self.requests.as_ref().map(|(_, b)| b.level(now)),
            tokens: self.tokens.as_ref().map(|b| b.level(now)),
        }
    }

    fn spend(&self, requests: f64, tokens: f64) {
        let mut s = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += requests;
        s.1 += tokens;
    }
}

/// Buckets built from config; tenants without limits are not limited.
pub struct LocalLimiter {
    /// Swapped whole by [`LocalLimiter::retune`] (a config reload); read once per call.
    buckets: ArcSwap<HashMap<String, Arc<TenantBuckets>>>,
    /// Spend budgets (a node alone: the whole budget; the cluster's fallback keeps its own).
    budgets: Ledger,
}

impl LocalLimiter {
    pub fn new<'a>(tenants: impl IntoIterator<Item = &'a TenantConfig>) -> LocalLimiter {
        let tenants: Vec<&TenantConfig> = tenants.into_iter().collect();
        let plans = tenants
            .iter()
            .filter_map(|t| Some((t.id.clone(), BudgetPlan::of(t.budget.as_ref()?)?)))
            .collect();
        let mut l = Self::with_quotas(
            tenants
                .iter()
                .map(|t| (t.id.clone(), Quotas::of(t), Levels::FULL)),
        );
        l.budgets = Ledger::new(plans, 1, false);
        l
    }

    /// Build from explicit quotas (e.g. each divided by the live node count) and starting levels.
    pub fn with_quotas(quotas: impl IntoIterator<Item = (String, Quotas, Levels)>) -> LocalLimiter {
        let buckets = quotas
            .into_iter()
            .filter_map(|(id, q, start)| TenantBuckets::new(q, start).map(|b| (id, Arc::new(b))))
            .collect();
        LocalLimiter {
            buckets: ArcSwap::from_pointee(buckets),
            budgets: Ledger::new(HashMap::new(), 1, false),
        }
    }

    /// New quotas from a config reload, from now on: a tenant whose quota is unchanged keeps its
    /// buckets as they are; a changed one gets new buckets holding what the old ones held (capped
    /// at the new capacity, never refilled: a reload hands out no burst); a new tenant starts
    /// full; a tenant no longer listed is gone. What a tenant spent carries over.
    pub fn retune(&self, quotas: impl IntoIterator<Item = (String, Quotas)>) {
        let now = Instant::now();
        let old = self.buckets.load_full();
        let next = quotas
            .into_iter()
            .filter_map(|(id, q)| {
                let kept = match old.get(&id) {
                    Some(tb) if tb.quotas == q => Some(tb.clone()),
                    Some(tb) => {
                        let nb = TenantBuckets::new(q, tb.levels(now));
                        let spent = *tb.spent.lock().unwrap_or_else(|e| e.into_inner());
                        nb.map(|nb| {
                            nb.spend(spent.0, spent.1);
                            Arc::new(nb)
                        })
                    }
                    None => TenantBuckets::new(q, Levels::FULL).map(Arc::new),
                };
                kept.map(|b| (id, b))
            })
            .collect();
        self.buckets.store(Arc::new(next));
    }

    /// Every limited tenant's levels now.
    pub fn levels(&self) -> HashMap<String, Levels> {
        let now = Instant::now();
        self.buckets
            .load()
            .iter()
            .map(|(id, tb)| (id.clone(), tb.levels(now)))
            .collect()
    }

    /// What each tenant spent since the last call (requests, tokens; net of what came back), with
    /// its levels now, zeroing the spend.
    pub fn take_spent(&self) -> Vec<Spent> {
        let now = Instant::now();
        self.buckets
            .load()
            .iter()
            .map(|(id, tb)| {
                let (requests, tokens) =
                    std::mem::take(&mut *tb.spent.lock().unwrap_or_else(|e| e.into_inner()));
                Spent {
                    tenant: id.clone(),
                    requests,
                    tokens,
                    levels: tb.levels(now),
                }
            })
            .collect()
    }

    /// Take (now, or booked within `req.max_wait`) from the tenant's buckets, or refuse taking nothing.
    pub fn decide(&self, req: LimitRequest<'_>) -> Decision {
        let buckets = self.buckets.load();
        let Some(tb) = buckets.get(req.tenant) else {
            return Decision::unlimited();
        };
        let now = Instant::now();
        let mut d = Decision {
            allowed: true,
            ..Decision::default()
        };
        // Tokens first: a refusal there must not consume a request slot.
        if let Some(tok) = &tb.tokens
            && req.tokens > 0
        {
            d.tokens_limit = Some(tok.capacity() as u64);
            match tok.take(req.tokens as f64, now, req.max_wait) {
                Take::Taken { level, wait } => {
                    d.tokens_remaining = Some(level.max(0.0) as u64);
                    d.tokens_reset = tok.until_full(level);
                    d.wait = wait;
                }
                Take::Refused { wait } => {
                    d.allowed = false;
                    d.tokens_remaining = Some(0);
                    d.tokens_reset = tok.until_full(0.0);
                    d.retry_after = Some(wait);
                    if let Some((rpm, _)) = &tb.requests {
                        d.limit = Some(*rpm);
                    }
                    return d;
                }
            }
        }
        let tokens_taken = match &tb.tokens {
            Some(t) if req.tokens > 0 => (req.tokens as f64).min(t.capacity()),
            _ => 0.0,
        };
        let Some((rpm, rb)) = &tb.requests else {
            tb.spend(0.0, tokens_taken);
            return d;
        };
        d.limit = Some(*rpm);
        if req.requests == 0 {
            tb.spend(0.0, tokens_taken);
            return d;
        }
        match rb.take(req.requests as f64, now, req.max_wait) {
            Take::Taken { level, wait } => {
                d.remaining = Some(level.max(0.0) as u32);
                d.reset = rb.until_full(level);
                d.wait = d.wait.max(wait);
                tb.spend((req.requests as f64).min(rb.capacity()), tokens_taken);
            }
            Take::Refused { wait } => {
                d.allowed = false;
                d.remaining = Some(0);
                d.reset = rb.until_full(0.0);
                d.retry_after = Some(wait);
                d.wait = Duration::ZERO;
                // Refused on requests: give the tokens back.
                if let Some(tok) = &tb.tokens
                    && req.tokens > 0
                {
                    tok.adjust((req.tokens as f64).min(tok.capacity()), now);
                }
            }
        }
        d
    }

    pub fn adjust_tokens(&self, tenant: &str, reserved: u64, actual: u64) {
        let buckets = self.buckets.load();
        let Some(tb) = buckets.get(tenant) else {
            return;
        };
        if let Some(tok) = &tb.tokens {
            let reserved = (reserved as f64).min(tok.capacity());
            tok.adjust(reserved - actual as f64, Instant::now());
            tb.spend(0.0, actual as f64 - reserved);
        }
    }

    /// Give back what an admitted (booked) request took and will not use.
    pub fn give_back(&self, tenant: &str, requests: u32, tokens: u64) {
        let buckets = self.buckets.load();
        let Some(tb) = buckets.get(tenant) else {
            return;
        };
        let now = Instant::now();
        let (mut r, mut t) = (0.0, 0.0);
        if let Some((_, rb)) = &tb.requests {
            r = (requests as f64).min(rb.capacity());
            rb.adjust(r, now);
        }
        if let Some(tok) = &tb.tokens {
            t = (tokens as f64).min(tok.capacity());
            tok.adjust(t, now);
        }
        tb.spend(-r, -t);
    }
}

impl RateLimiter for LocalLimiter {
    fn check<'a>(&'a self, req: LimitRequest<'a>) -> LimitFuture<'a> {
        let d = self.decide(req);
        Box::pin(std::future::ready(d))
    }

    fn reconcile<'a>(&'a self, tenant: &'a str, reserved: u64, actual: u64) -> ReconcileFuture<'a> {
        self.adjust_tokens(tenant, reserved, actual);
        Box::pin(std::future::ready(()))
    }

    fn release<'a>(&'a self, tenant: &'a str, requests: u32, tokens: u64) -> ReconcileFuture<'a> {
        self.give_back(tenant, requests, tokens);
        Box::pin(std::future::ready(()))
    }

    fn retune(&self, tenants: &[TenantConfig]) {
        LocalLimiter::retune(self, tenants.iter().map(|t| (t.id.clone(), Quotas::of(t))));
    }

    fn mode(&self) -> &'static str {
        "local"
    }

    fn budget<'a>(&'a self, tenant: &'a str, cost: u64) -> BudgetFuture<'a> {
        let d = self.budgets.take(tenant, cost, now_ms());
        if let Some(v) = d.as_ref().and_then(|d| d.view) {
            crate::observe::Metrics::budget_spend(tenant, v.period.label(), v.spent, v.limit);
        }
        Box::pin(std::future::ready(
            d.unwrap_or_else(BudgetDecision::unlimited),
        ))
    }

    fn settle_budget<'a>(&'a self, hold: &'a BudgetHold, actual: u64) -> ReconcileFuture<'a> {
        let delta = actual as i64 - hold.reserved as i64;
        self.budgets.add(&hold.tenant, &hold.spans, delta);
        Box::pin(std::future::ready(()))
    }

    fn spend_report(&self) -> ReportFuture<'_> {
        let tenants = self.budgets.report(now_ms());
        for (t, periods) in &tenants {
            for p in periods {
                crate::observe::Metrics::budget_spend(t, p.period.label(), p.spent, p.limit);
            }
        }
        Box::pin(std::future::ready(SpendReport {
            source: "local",
            tenants,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(yaml_limits: &str) -> TenantConfig {
        serde_saphyr::from_str(&format!("id: t\nkeys: [sk-t1]\nlimits: {yaml_limits}")).unwrap()
    }

    fn req(tokens: u64) -> LimitRequest<'static> {
        LimitRequest {
            tenant: "t",
            requests: 1,
            tokens,
            max_wait: Duration::ZERO,
        }
    }

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let t = tenant("{ requests_per_minute: 60, burst: 3 }");
        let l = LocalLimiter::new([&t]);
        let rem: Vec<_> = (0..3).map(|_| l.decide(req(0))).collect();
        assert!(rem.iter().all(|d| d.allowed));
        assert_eq!(rem[2].remaining, Some(0));
        let d = l.decide(req(0));
        assert!(!d.allowed);
        let wait = d.retry_after.unwrap();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn unknown_or_unlimited_tenant_passes() {
        let l = LocalLimiter::new([]);
        assert!(
            l.decide(LimitRequest {
                tenant: "x",
                requests: 1,
                tokens: 0,
                max_wait: Duration::ZERO,
            })
            .allowed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_reserve_then_reconcile_refunds_and_charges() {
        let t = tenant("{ tokens_per_minute: 600 }");
        let l = LocalLimiter::new([&t]);
        // Reserve 500 of 600.
        let d = l.decide(req(500));
        assert!(d.allowed);
        assert_eq!(d.tokens_remaining, Some(100));
        // 200 more do not fit: refused, with the wait for 100 tokens at 10/s.
        let d = l.decide(req(200));
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(10)));
        // Only 50 were used: 450 come back.
        l.adjust_tokens("t", 500, 50);
        assert!(l.decide(req(200)).allowed);
        // Used more than reserved: the overage is charged, the bucket goes into debt.
        l.adjust_tokens("t", 10, 1000);
        let d = l.decide(req(10));
        assert!(!d.allowed);
        // Time pays the debt back and refills it.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(l.decide(req(10)).allowed);
    }

    #[test]
    fn a_token_refusal_does_not_use_a_request_slot() {
        let t = tenant("{ requests_per_minute: 60, burst: 2, tokens_per_minute: 100 }");
        let l = LocalLimiter::new([&t]);
        assert!(l.decide(req(100)).allowed);
        let d = l.decide(req(50));
        assert!(!d.allowed);
        assert_eq!(d.tokens_remaining, Some(0));
        // The refused request took no request slot: one is still there.
        assert!(l.decide(req(0)).allowed);
        assert!(!l.decide(req(0)).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn retune_keeps_levels_caps_them_and_never_refills() {
        let t = tenant("{ requests_per_minute: 60, burst: 5 }");
        let l = LocalLimiter::new([&t]);
        for _ in 0..5 {
            assert!(l.decide(req(0)).allowed);
        }
        let q = |rpm, burst| Quotas {
            requests_per_minute: Some(rpm),
            burst: Some(burst),
            tokens_per_minute: None,
        };
        // A bigger burst: still empty.
        l.retune([("t".to_string(), q(60, 50))]);
        assert!(!l.decide(req(0)).allowed);
        // Ten seconds at 1/s: ten requests, not fifty.
        tokio::time::advance(Duration::from_secs(10)).await;
        let passed = (0..50).filter(|_| l.decide(req(0)).allowed).count();
        assert_eq!(passed, 10);
        // Refilled to 50, then a burst of 3: capped at 3.
        tokio::time::advance(Duration::from_secs(60)).await;
        l.retune([("t".to_string(), q(60, 3))]);
        let passed = (0..10).filter(|_| l.decide(req(0)).allowed).count();
        assert_eq!(passed, 3);
        // An unchanged quota keeps the very same buckets; a removed tenant is unlimited.
        let before = Arc::as_ptr(&l.buckets.load()["t"]);
        l.retune([("t".to_string(), q(60, 3))]);
        assert_eq!(before, Arc::as_ptr(&l.buckets.load()["t"]));
        l.retune([]);
        assert!(l.decide(req(0)).allowed);
        assert_eq!(l.decide(req(0)).limit, None);
    }

    #[test]
    fn quotas_divide_among_nodes() {
        let q = Quotas {
            requests_per_minute: Some(600),
            burst: Some(30),
            tokens_per_minute: Some(10_000),
        };
        assert_eq!(
            q.divided(3),
            Quotas {
                requests_per_minute: Some(200),
                burst: Some(10),
                tokens_per_minute: Some(3334)
            }
        );
        assert_eq!(q.divided(0), q);
    }
}
