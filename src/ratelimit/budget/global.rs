//! The cluster limiter's budgets: every take and settle is one `EVALSHA` of `lua/budget.lua` on the
//! tenant's spend counters in Redis (through the limiter's connection, the breaker of the tenant's
//! group and the per-call budget); while that group is in fallback, a [`Ledger`] holding this
//! node's share (`what was left ÷ live nodes`) answers, and what it admitted is charged to Redis
//! when it answers again.

use super::ledger::Ledger;
use super::period::now_ms;
use super::{BudgetDecision, BudgetHold, BudgetPlan, Period, PeriodSpend, SpendReport};
use crate::config::TenantConfig;
use crate::observe::Metrics;
use crate::ratelimit::cluster_limiter::Inner;
use crate::ratelimit::group::Group;
use crate::ratelimit::plan::bucket_keys;
use crate::ratelimit::script::CallError;
use ::redis::aio::ConnectionLike;
use ::redis::{Script, ScriptInvocation};
use std::collections::HashMap;
use std::sync::Mutex;

/// Spend budgets in lua/budget.lua (contract in the script's header).
pub const BUDGET_LUA: &str = include_str!("../../../lua/budget.lua");

pub(crate) struct Budgets {
    /// Tenant → `<prefix>:{<tenant>}:budget:` (the tenant's hash tag, like its buckets).
    bases: HashMap<String, String>,
    script: Script,
    /// This node's share while Redis is away.
    pub(crate) fallback: Ledger,
    /// (tenant, period) → (occurrence start, the cluster's spend) as Redis last answered.
    last: Mutex<HashMap<(String, Period), (u64, u64)>>,
}

impl Budgets {
    pub(crate) fn new(prefix: &str, tenants: &[TenantConfig], live_nodes: usize) -> Budgets {
        let plans: HashMap<String, BudgetPlan> = tenants
            .iter()
            .filter_map(|t| Some((t.id.clone(), BudgetPlan::of(t.budget.as_ref()?)?)))
            .collect();
        let bases = plans
            .keys()
            .map(|id| {
                let req = &bucket_keys(prefix, id)[0];
                let base = req.strip_suffix(":req").unwrap_or(req);
                (id.clone(), format!("{base}:budget:"))
            })
            .collect();
        Budgets {
            bases,
            script: Script::new(BUDGET_LUA),
            fallback: Ledger::new(plans, live_nodes, true),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The Redis key of `tenant`'s counter for the occurrence of `period` starting at `start_ms`.
    pub(crate) fn key(&self, tenant: &str, period: Period, start_ms: u64) -> Option<String> {
        Some(format!(
            "{}{}",
            self.bases.get(tenant)?,
            period.tag(start_ms)
        ))
    }

    /// One script call over the given occurrences: `op`, `amount`, and per key its limit, TTL (the
    /// period's end plus its grace, from now) and floor.
    fn invocation(
        &self,
        tenant: &str,
        op: &str,
        amount: i64,
        spans: &[(Period, u64, u64, Option<u64>)],
        now: u64,
    ) -> ScriptInvocation<'_> {
        let mut inv = self.script.prepare_invoke();
        for &(p, start, _, _) in spans {
            inv.key(self.key(tenant, p, start).unwrap_or_default());
        }
        inv.arg(op).arg(amount);
        for &(p, start, limit, floor) in spans {
            let end = p.span(start).end_ms;
            let ttl = end.saturating_sub(now) + p.grace().as_millis() as u64;
            inv.arg(limit)
                .arg(ttl.max(1))
                .arg(floor.map_or(String::new(), |f| f.to_string()));
        }
        inv
    }

    /// Remember what Redis said each counter holds, and show it in the spend gauges.
    fn record(&self, tenant: &str, plan: &BudgetPlan, spans: &[(Period, u64)], spent: &[i64]) {
        let now = now_ms();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for (&(p, start), &s) in spans.iter().zip(spent) {
            if p.span(now).start_ms != start {
                continue;
            }
            let s = s.max(0) as u64;
            last.insert((tenant.to_string(), p), (start, s));
            if let Some(&(_, limit)) = plan.limits.iter().find(|(q, _)| *q == p) {
                Metrics::budget_spend(tenant, p.label(), s, limit);
            }
        }
    }
}

impl Inner {
    /// Take `cost` micro-dollars from `tenant`'s budgets (Redis, else this node's share).
    pub(crate) async fn budget_take(&self, tenant: &str, cost: u64) -> BudgetDecision {
        let b = &self.budgets;
        let Some(plan) = b.fallback.plan(tenant) else {
            return BudgetDecision::unlimited();
        };
        let group = self.group_of(tenant);
        if self.groups[group].breaker.is_open() && !self.wait_settled(group).await {
            return self.budget_local(tenant, cost);
        }
        let now = now_ms();
        let spans: Vec<_> = plan
            .limits
            .iter()
            .map(|&(p, limit)| (p, p.span(now).start_ms, limit, None))
            .collect();
        let inv = b.invocation(tenant, "take", cost as i64, &spans, now);
        let reply = match self.call_in::<Vec<i64>>(group, &inv).await {
            Ok(v) if v.len() == spans.len() + 1 => v,
            _ => return self.budget_local(tenant, cost),
        };
        let starts: Vec<_> = spans.iter().map(|s| (s.0, s.1)).collect();
        b.record(tenant, plan, &starts, &reply[1..]);
        let spent: Vec<u64> = reply[1..].iter().map(|&s| s.max(0) as u64).collect();
        BudgetDecision::of(tenant, plan, &spent, cost, reply[0] == 1, now)
    }

    /// Whether `tenant`'s calls go to the Redis server of group `g`.
    fn in_group(&self, tenant: &str, g: &Group) -> bool {
        std::ptr::eq(&self.groups[self.group_of(tenant)], g)
    }

    fn budget_local(&self, tenant: &str, cost: u64) -> BudgetDecision {
        let d = self
            .budgets
            .fallback
            .take(tenant, cost, now_ms())
            .unwrap_or_else(BudgetDecision::unlimited);
        if let Some(v) = d.view {
            Metrics::budget_spend(tenant, v.period.label(), v.spent, v.limit);
        }
        d
    }

    /// Settle a hold: add `actual - reserved` to the counters it was taken from. At least once for
    /// an overage (kept for the charge when the call may not have run), at most once for a refund.
    pub(crate) async fn budget_settle(&self, hold: &BudgetHold, actual: u64) {
        let delta = actual as i64 - hold.reserved as i64;
        let b = &self.budgets;
        let Some(plan) = b.fallback.plan(&hold.tenant) else {
            return;
        };
        if delta == 0 {
            return;
        }
        let group = self.group_of(&hold.tenant);
        if self.groups[group].breaker.is_open() {
            b.fallback.add(&hold.tenant, &hold.spans, delta);
            return;
        }
        let spans: Vec<_> = hold.spans.iter().map(|&(p, s)| (p, s, 0, None)).collect();
        let inv = b.invocation(&hold.tenant, "add", delta, &spans, now_ms());
        match self.call_in::<Vec<i64>>(group, &inv).await {
            Ok(v) if v.len() == spans.len() + 1 => {
                b.record(&hold.tenant, plan, &hold.spans, &v[1..])
            }
            // A call that may have run in Redis (timed out, cut, or answered oddly): a refund is
            // dropped rather than risk giving it twice; money errs towards spent.
            Ok(_) | Err(CallError::Timeout | CallError::BadReply(_)) if delta < 0 => {}
            Err(CallError::Redis(e)) if delta < 0 && (e.is_io_error() || e.is_timeout()) => {}
            // Not run: kept here and charged when Redis answers again.
            _ => b.fallback.add(&hold.tenant, &hold.spans, delta),
        }
    }

    /// The fallback of `g`'s tenants starts from this node's share of what Redis last said was
    /// spent.
    pub(crate) fn seed_budgets(&self, g: &Group) {
        let last = self
            .budgets
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let only = |t: &str| self.in_group(t, g);
        self.budgets.fallback.seed(&last, now_ms(), &only);
    }

    /// Charge what the fallback admitted for `g`'s tenants (and the spend it knew of) to Redis. A
    /// failed charge is dropped, like the buckets' (Redis just came back).
    pub(crate) async fn charge_budgets<C: ConnectionLike + Send>(&self, g: &Group, conn: &mut C) {
        let b = &self.budgets;
        let now = now_ms();
        let only = |t: &str| self.in_group(t, g);
        for c in b.fallback.settle(&only) {
            let spans = [(c.period, c.start_ms, 0, c.floor)];
            let inv = b.invocation(&c.tenant, "add", c.amount, &spans, now);
            let call = inv.invoke_async::<Vec<i64>>(conn);
            if !matches!(
                tokio::time::timeout(self.connect_timeout, call).await,
                Ok(Ok(_))
            ) {
                tracing::debug!(tenant = %c.tenant, period = c.period.label(), micro_usd = c.amount, "budget: fallback spend not charged");
            }
        }
    }

    /// Every budgeted tenant's spend now: from Redis (a read of each tenant's counters), else (its
    /// breaker group open, or the read failing) from this node's fallback share. The source is
    /// `global`, `fallback`, or `partial` when some tenants came from each.
    pub(crate) async fn spend_report(&self) -> SpendReport {
        let b = &self.budgets;
        let now = now_ms();
        let local = b.fallback.report(now);
        let (mut global, mut fallback) = (0, 0);
        let mut tenants = Vec::with_capacity(local.len());
        for (tenant, periods) in local {
            let group = self.group_of(&tenant);
            let spans: Vec<_> = periods
                .iter()
                .map(|p| (p.period, p.period.span(now).start_ms, p.limit, None))
                .collect();
            let inv = b.invocation(&tenant, "take", 0, &spans, now);
            let answer = if self.groups[group].breaker.is_open() {
                None
            } else {
                self.call_in::<Vec<i64>>(group, &inv).await.ok()
            };
            let Some(v) = answer else {
                fallback += 1;
                tenants.push((tenant, periods));
                continue;
            };
            global += 1;
            let periods = periods
                .into_iter()
                .zip(v.iter().skip(1))
                .map(|(p, &s)| PeriodSpend {
                    spent: s.max(0) as u64,
                    ..p
                })
                .collect::<Vec<_>>();
            if let Some(plan) = b.fallback.plan(&tenant) {
                let starts: Vec<_> = spans.iter().map(|s| (s.0, s.1)).collect();
                b.record(&tenant, plan, &starts, &v[1..]);
            }
            tenants.push((tenant, periods));
        }
        let source = match (global, fallback) {
            (_, 0) => "global",
            (0, _) => "fallback",
            _ => "partial",
        };
        SpendReport { source, tenants }
    }
}
