//! Spend budgets, beside the rate limits in Shape's limiter seam: a tenant may spend at most so many
//! dollars per UTC day, calendar month or window. Same path as the token limit: the estimated cost
//! (estimated tokens × the highest price among the route's backends) is reserved at admission
//! ([`RateLimiter::budget`]), and the difference to the actual cost (actual `usage` × the answering
//! backend's price) is settled when the response or stream ends ([`RateLimiter::settle_budget`]);
//! a request that got no answer gives its reservation back.
//!
//! Rooms: `period` (UTC periods, the budget clock), `money` (integer micro-dollars), `ledger`
//! (in-memory counters: the local limiter's, and a cluster node's fallback share), `global` (the
//! cluster limiter's Redis path through `lua/budget.lua`, with the fallback beside it).
//!
//! [`RateLimiter::budget`]: super::RateLimiter::budget
//! [`RateLimiter::settle_budget`]: super::RateLimiter::settle_budget

mod global;
mod ledger;
pub mod money;
pub mod period;

pub use global::BUDGET_LUA;
pub(crate) use global::Budgets;
pub(crate) use ledger::Ledger;
pub use money::{cost_micros, max_price, micros_to_usd, usd_text, usd_to_micros};
pub use period::{Period, Span};

use crate::config::BudgetConfig;
use std::sync::Arc;
use std::time::Duration;

/// A tenant's budgets: each period with its limit in micro-dollars.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetPlan {
    pub limits: Vec<(Period, u64)>,
}

impl BudgetPlan {
    pub fn of(cfg: &BudgetConfig) -> Option<BudgetPlan> {
        let mut limits = vec![];
        if let Some(usd) = cfg.usd_per_day {
            limits.push((Period::Day, usd_to_micros(usd)));
        }
        if let Some(usd) = cfg.usd_per_month {
            limits.push((Period::Month, usd_to_micros(usd)));
        }
        if let Some(w) = cfg.usd_per_window {
            limits.push((Period::Window(w.window_ms), usd_to_micros(w.usd)));
        }
        (!limits.is_empty()).then_some(BudgetPlan { limits })
    }
}

/// One period of a tenant's budget as the `x-ratelimit-*-budget` headers and the 429 report it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetView {
    pub period: Period,
    /// Micro-dollars.
    pub limit: u64,
    pub spent: u64,
    /// When the period ends (Unix ms, budget clock) and how long until then.
    pub reset_at_ms: u64,
    pub reset: Duration,
}

impl BudgetView {
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.spent)
    }
}

/// What an admitted request holds of its tenant's budgets: given back or settled after the response.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetHold {
    pub tenant: Arc<str>,
    /// The period occurrences it was taken from (`Period`, start ms): a reconcile after a period
    /// boundary still settles the period it was reserved in.
    pub spans: Vec<(Period, u64)>,
    /// Micro-dollars reserved.
    pub reserved: u64,
}

/// The verdict on a request's estimated cost.
#[derive(Debug, Clone, Default)]
pub struct BudgetDecision {
    pub allowed: bool,
    /// The tightest period (refused: the period that ran out, the one resetting last if several).
    pub view: Option<BudgetView>,
    /// What was taken (allowed and the tenant has a budget).
    pub hold: Option<BudgetHold>,
}

impl BudgetDecision {
    /// The tenant has no budget.
    pub fn unlimited() -> BudgetDecision {
        BudgetDecision {
            allowed: true,
            ..BudgetDecision::default()
        }
    }

    /// The verdict on `cost` given each period's spend (after the take when allowed, before it when
    /// refused), at `now_ms`.
    pub(crate) fn of(
        tenant: &str,
        plan: &BudgetPlan,
        spent: &[u64],
        cost: u64,
        allowed: bool,
        now_ms: u64,
    ) -> BudgetDecision {
        let views: Vec<BudgetView> = plan
            .limits
            .iter()
            .zip(spent)
            .map(|(&(period, limit), &spent)| {
                let end = period.span(now_ms).end_ms;
                BudgetView {
                    period,
                    limit,
                    spent,
                    reset_at_ms: end,
                    reset: Duration::from_millis(end.saturating_sub(now_ms)),
                }
            })
            .collect();
        let view = if allowed {
            views.iter().min_by_key(|v| v.remaining()).copied()
        } else {
            views
                .iter()
                .filter(|v| v.spent + cost > v.limit)
                .max_by_key(|v| v.reset_at_ms)
                .copied()
        };
        let hold = allowed.then(|| BudgetHold {
            tenant: Arc::from(tenant),
            spans: views
                .iter()
                .map(|v| (v.period, v.period.span(now_ms).start_ms))
                .collect(),
            reserved: cost,
        });
        BudgetDecision {
            allowed,
            view,
            hold,
        }
    }
}

/// One period of a tenant's budget for `/admin/tenants` and the spend gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodSpend {
    pub period: Period,
    pub limit: u64,
    pub spent: u64,
    pub reset_at_ms: u64,
}

/// Every budgeted tenant's periods, and where the figures come from (`global`, `local`,
/// `fallback`).
#[derive(Debug, Clone, Default)]
pub struct SpendReport {
    pub source: &'static str,
    pub tenants: Vec<(String, Vec<PeriodSpend>)>,
}

impl SpendReport {
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let tenants: Vec<_> = self
            .tenants
            .iter()
            .map(|(id, periods)| {
                let periods: Vec<_> = periods
                    .iter()
                    .map(|p| {
                        let mut v = json!({
                            "period": p.period.label(),
                            "budget_usd": micros_to_usd(p.limit as i64),
                            "spent_usd": micros_to_usd(p.spent as i64),
                            "remaining_usd": micros_to_usd(p.limit.saturating_sub(p.spent) as i64),
                            "resets_at": period::rfc3339(p.reset_at_ms),
                        });
                        if let Period::Window(ms) = p.period {
                            v["window_ms"] = json!(ms);
                        }
                        v
                    })
                    .collect();
                json!({"id": id, "budget": periods})
            })
            .collect();
        json!({"source": self.source, "tenants": tenants})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_the_period_that_ran_out() {
        let plan = BudgetPlan {
            limits: vec![(Period::Day, 1_000), (Period::Month, 10_000)],
        };
        let now = 86_400_000 * 3 + 5;
        let d = BudgetDecision::of("t", &plan, &[950, 2_000], 100, false, now);
        let v = d.view.unwrap();
        assert_eq!(v.period, Period::Day);
        assert_eq!(v.remaining(), 50);
        assert_eq!(v.reset, Duration::from_millis(86_400_000 - 5));
        assert!(d.hold.is_none());
        // Both out: the later reset is when the request can pass.
        let d = BudgetDecision::of("t", &plan, &[950, 9_950], 100, false, now);
        assert_eq!(d.view.unwrap().period, Period::Month);
        // Allowed: the tightest period, and a hold on both.
        let d = BudgetDecision::of("t", &plan, &[100, 9_900], 100, true, now);
        assert_eq!(d.view.unwrap().period, Period::Month);
        let h = d.hold.unwrap();
        assert_eq!(h.reserved, 100);
        assert_eq!(h.spans[0], (Period::Day, 86_400_000 * 3));
    }
}
