//! In-memory spend counters, one per tenant and period: the whole budget on a node alone (the local
//! limiter), or a cluster node's share of what was left (`budget ÷ live nodes`) while Redis is away.
//! In the second role it also keeps what it admitted, to be charged to Redis when it answers again.

use super::{BudgetDecision, BudgetPlan, Period, PeriodSpend};
use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) struct Ledger {
    plans: HashMap<String, BudgetPlan>,
    /// Keep what was admitted for Redis (a cluster node's fallback).
    track: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    divisor: u64,
    /// (tenant, period) → (start of the occurrence counted, spent in it, this node's scale).
    slots: HashMap<(String, Period), (u64, u64)>,
    /// (tenant, period, start) → net micro-dollars admitted here, not yet charged to Redis.
    pending: HashMap<(String, Period, u64), i64>,
    /// (tenant, period, start) → the cluster's spend when this node last heard from Redis.
    floors: HashMap<(String, Period, u64), u64>,
}

/// What to add to one Redis spend counter when Redis answers again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Charge {
    pub tenant: String,
    pub period: Period,
    pub start_ms: u64,
    pub amount: i64,
    pub floor: Option<u64>,
}

impl Ledger {
    /// Empty counters; each period's limit divided by `divisor`.
    pub(crate) fn new(plans: HashMap<String, BudgetPlan>, divisor: usize, track: bool) -> Ledger {
        Ledger {
            plans,
            track,
            state: Mutex::new(State {
                divisor: divisor.max(1) as u64,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn plan(&self, tenant: &str) -> Option<&BudgetPlan> {
        self.plans.get(tenant)
    }

    /// Take `cost` from every period of the tenant's budget, or refuse taking nothing. None: the
    /// tenant has no budget.
    pub(crate) fn take(&self, tenant: &str, cost: u64, now_ms: u64) -> Option<BudgetDecision> {
        let plan = self.plans.get(tenant)?;
        let mut st = self.lock();
        let n = st.divisor;
        let share = BudgetPlan {
            limits: plan.limits.iter().map(|&(p, l)| (p, l / n)).collect(),
        };
        let spent: Vec<u64> = plan
            .limits
            .iter()
            .map(|&(p, _)| current(&mut st, tenant, p, now_ms).1)
            .collect();
        let allowed = share
            .limits
            .iter()
            .zip(&spent)
            .all(|(&(_, limit), &s)| s + cost <= limit);
        let mut after = spent.clone();
        if allowed && cost > 0 {
            for (&(p, _), s) in plan.limits.iter().zip(after.iter_mut()) {
                *s += cost;
                let start = current(&mut st, tenant, p, now_ms).0;
                st.slots.insert((tenant.to_string(), p), (start, *s));
                if self.track {
                    *st.pending
                        .entry((tenant.to_string(), p, start))
                        .or_default() += cost as i64;
                }
            }
        }
        let mut d = BudgetDecision::of(tenant, &share, &after, cost, allowed, now_ms);
        // Reported at the cluster's scale.
        if let Some(v) = d.view.as_mut() {
            let full = plan.limits.iter().find(|(p, _)| *p == v.period);
            v.limit = full.map_or(v.limit, |f| f.1);
            v.spent *= n;
        }
        Some(d)
    }

    /// Add `delta` (a settle or a give-back) to the occurrences a hold was taken from.
    pub(crate) fn add(&self, tenant: &str, spans: &[(Period, u64)], delta: i64) {
        if delta == 0 || !self.plans.contains_key(tenant) {
            return;
        }
        let mut st = self.lock();
        for &(p, start) in spans {
            if let Some((s0, spent)) = st.slots.get_mut(&(tenant.to_string(), p))
                && *s0 == start
            {
                *spent = spent.saturating_add_signed(delta);
            }
            if self.track {
                *st.pending
                    .entry((tenant.to_string(), p, start))
                    .or_default() += delta;
            }
        }
    }

    /// Start over from what the cluster had spent (`known`: (tenant, period) → (start, spend), as
    /// Redis last answered): this node's share of each current occurrence. Periods not known start
    /// at 0 (the node never heard of them: at most one share each more is admitted). Only the
    /// tenants `only` accepts (those behind one breaker); the others' counters stay.
    pub(crate) fn seed(
        &self,
        known: &HashMap<(String, Period), (u64, u64)>,
        now_ms: u64,
        only: &dyn Fn(&str) -> bool,
    ) {
        let mut st = self.lock();
        let n = st.divisor;
        st.slots.retain(|(t, _), _| !only(t));
        st.floors.retain(|(t, _, _), _| !only(t));
        for (tenant, plan) in self.plans.iter().filter(|(t, _)| only(t)) {
            for &(p, _) in &plan.limits {
                let start = p.span(now_ms).start_ms;
                let global = match known.get(&(tenant.clone(), p)) {
                    Some(&(s, spent)) if s == start => spent,
                    _ => 0,
                };
                st.slots
                    .insert((tenant.clone(), p), (start, global.div_ceil(n)));
                if global > 0 {
                    st.floors.insert((tenant.clone(), p, start), global);
                }
            }
        }
    }

    /// Re-divide among `live_nodes`, keeping each counter's share of the cluster.
    pub(crate) fn resize(&self, live_nodes: usize) {
        let mut st = self.lock();
        let (old, n) = (st.divisor, live_nodes.max(1) as u64);
        st.divisor = n;
        for (_, spent) in st.slots.values_mut() {
            *spent = (*spent * old).div_ceil(n);
        }
    }

    /// What to charge to Redis: every counter's net admissions and known floor, once (of the tenants
    /// `only` accepts: those whose Redis answers again).
    pub(crate) fn settle(&self, only: &dyn Fn(&str) -> bool) -> Vec<Charge> {
        let mut st = self.lock();
        let (pending, kept): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut st.pending)
            .into_iter()
            .partition(|((t, _, _), _)| only(t));
        st.pending = kept;
        let (mut floors, kept): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut st.floors)
            .into_iter()
            .partition(|((t, _, _), _)| only(t));
        st.floors = kept;
        let mut out: Vec<Charge> = pending
            .into_iter()
            .map(|((tenant, period, start_ms), amount)| {
                let floor = floors.remove(&(tenant.clone(), period, start_ms));
                Charge {
                    tenant,
                    period,
                    start_ms,
                    amount,
                    floor,
                }
            })
            .filter(|c| c.amount != 0 || c.floor.is_some())
            .collect();
        out.extend(
            floors
                .into_iter()
                .map(|((tenant, period, start_ms), f)| Charge {
                    tenant,
                    period,
                    start_ms,
                    amount: 0,
                    floor: Some(f),
                }),
        );
        out
    }

    /// Each budgeted tenant's periods now, at the cluster's scale.
    pub(crate) fn report(&self, now_ms: u64) -> Vec<(String, Vec<PeriodSpend>)> {
        let mut st = self.lock();
        let n = st.divisor;
        let mut out: Vec<_> = self
            .plans
            .iter()
            .map(|(tenant, plan)| {
                let periods = plan
                    .limits
                    .iter()
                    .map(|&(p, limit)| PeriodSpend {
                        period: p,
                        limit,
                        spent: current(&mut st, tenant, p, now_ms).1 * n,
                        reset_at_ms: p.span(now_ms).end_ms,
                    })
                    .collect();
                (tenant.clone(), periods)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The counter of the occurrence `now_ms` falls in (a new occurrence starts at 0).
fn current(st: &mut State, tenant: &str, p: Period, now_ms: u64) -> (u64, u64) {
    let start = p.span(now_ms).start_ms;
    let slot = st
        .slots
        .entry((tenant.to_string(), p))
        .or_insert((start, 0));
    if slot.0 != start {
        *slot = (start, 0);
    }
    *slot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(n: usize, track: bool) -> Ledger {
        let plans = HashMap::from([(
            "t".to_string(),
            BudgetPlan {
                limits: vec![(Period::Window(1_000), 900)],
            },
        )]);
        Ledger::new(plans, n, track)
    }

    fn admitted(l: &Ledger, cost: u64, now: u64) -> usize {
        (0..100)
            .take_while(|_| l.take("t", cost, now).unwrap().allowed)
            .count()
    }

    #[test]
    fn holds_the_budget_and_starts_over_each_period() {
        let l = ledger(1, false);
        assert!(l.take("other", 5, 0).is_none(), "no budget, no decision");
        assert_eq!(admitted(&l, 100, 10), 9);
        let d = l.take("t", 100, 999).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.view.unwrap().reset.as_millis(), 1);
        assert_eq!(admitted(&l, 100, 1_000), 9, "the next window is empty");
        // A refund to the old window changes nothing now; to this one it makes room.
        l.add("t", &[(Period::Window(1_000), 0)], -500);
        assert!(!l.take("t", 100, 1_001).unwrap().allowed);
        l.add("t", &[(Period::Window(1_000), 1_000)], -200);
        assert_eq!(admitted(&l, 100, 1_002), 2);
        assert!(
            l.settle(&|_| true).is_empty(),
            "a local ledger keeps nothing for Redis"
        );
    }

    #[test]
    fn a_fallback_share_starts_from_the_known_spend_and_is_charged_back() {
        let l = ledger(3, true);
        let known = HashMap::from([(("t".to_string(), Period::Window(1_000)), (0, 600))]);
        l.seed(&known, 10, &|_| true);
        // 900 / 3 = 300 each, of which 200 were spent: one more request of 100.
        assert_eq!(admitted(&l, 100, 20), 1);
        let d = l.take("t", 100, 30).unwrap();
        assert_eq!(
            d.view.unwrap().limit,
            900,
            "reported at the cluster's scale"
        );
        l.add("t", &[(Period::Window(1_000), 0)], -40);
        let charges = l.settle(&|_| true);
        assert_eq!(
            charges,
            vec![Charge {
                tenant: "t".into(),
                period: Period::Window(1_000),
                start_ms: 0,
                amount: 60,
                floor: Some(600),
            }]
        );
        assert!(l.settle(&|_| true).is_empty(), "charged once");
        // Two nodes left: the 260 of 300 spent here is 390 of 450.
        l.resize(2);
        assert_eq!(admitted(&l, 10, 40), 6);
    }
}
