//! Shape's side of spend budgets: the reservation an admitted request holds ([`HeldBudget`]), settled
//! with the actual cost when its response ends, or given back whole if it never got one (no
//! backend answered, or the request was refused by a later limit).

use crate::ratelimit::{BudgetHold, RateLimiter};
use std::future::Future;
use std::sync::Arc;

/// What a response actually used: its tokens, and their cost at the answering backend's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    pub tokens: u64,
    /// Micro-dollars.
    pub cost: u64,
}

/// An admitted request's budget reservation. Dropped unsettled, it is given back.
pub struct HeldBudget {
    limiter: Arc<dyn RateLimiter>,
    hold: Option<BudgetHold>,
}

impl HeldBudget {
    pub fn new(limiter: Arc<dyn RateLimiter>, hold: BudgetHold) -> HeldBudget {
        HeldBudget {
            limiter,
            hold: Some(hold),
        }
    }

    /// Settle with the actual cost (None: unknown, the reservation stands as the charge).
    pub fn settle(mut self, actual: Option<u64>) {
        let Some(hold) = self.hold.take() else { return };
        if let Some(actual) = actual
            && actual != hold.reserved
        {
            run(self.limiter.clone(), hold, actual);
        }
    }
}

impl Drop for HeldBudget {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            run(self.limiter.clone(), hold, 0);
        }
    }
}

/// A local limiter settles at once (before the client can send its next request); a Redis call goes
/// on in its own task.
fn run(limiter: Arc<dyn RateLimiter>, hold: BudgetHold, actual: u64) {
    let mut settle = Box::pin(async move { limiter.settle_budget(&hold, actual).await });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if settle.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(settle);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{PriceConfig, ShapingConfig, TenantConfig};
    use crate::ratelimit::{LocalLimiter, RateLimiter};
    use crate::shape::{AdmitError, Arrival, Door, Used};
    use std::sync::Arc;

    /// 1000 µ$ per hour and one request at a time; every request estimated at 200 µ$.
    fn door() -> (Door, Arc<dyn RateLimiter>) {
        let t: TenantConfig = serde_saphyr::from_str(
            "id: t\nlimits: { requests_per_minute: 1, burst: 1 }\nbudget: { usd_per_window: { usd: 0.001, window_ms: 3600000 } }",
        )
        .unwrap();
        let limiter: Arc<dyn RateLimiter> = Arc::new(LocalLimiter::new([&t]));
        let shaping: ShapingConfig = serde_saphyr::from_str("max_wait_ms: 0").unwrap();
        (Door::new(limiter.clone(), &shaping, 1), limiter)
    }

    fn arrival(h: &http::HeaderMap, prompt: u64) -> Arrival<'_> {
        Arrival {
            tenant: "t",
            tier: "standard",
            weight: 1,
            headers: h,
            request_type: "chat",
            prompt_tokens: prompt,
            max_tokens: Some(100),
            price: PriceConfig {
                input_per_1m: 1.0,
                output_per_1m: 1.0,
            },
        }
    }

    async fn spent(l: &Arc<dyn RateLimiter>) -> u64 {
        l.spend_report().await.tenants[0].1[0].spent
    }

    #[tokio::test(start_paused = true)]
    async fn reserved_at_admission_given_back_when_refused_settled_with_the_actual_cost() {
        let (door, l) = door();
        let h = http::HeaderMap::new();
        let a = door.admit(arrival(&h, 100)).await.unwrap();
        let b = a.decision.budget.unwrap();
        assert_eq!((b.limit, b.remaining()), (1_000, 800));
        assert_eq!(spent(&l).await, 200);
        // The request bucket refuses the next one: its budget reservation comes back.
        let e = door.admit(arrival(&h, 100)).await.err().unwrap();
        assert!(matches!(e, AdmitError::RateLimited { .. }), "{e}");
        assert_eq!(spent(&l).await, 200);
        // The response used less than estimated.
        let sink = a.usage_sink().unwrap();
        sink(Some(Used {
            tokens: 150,
            cost: 150,
        }));
        assert_eq!(spent(&l).await, 150);
        // A request with no answer (its sink dropped unused) gives everything back.
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        let c = door.admit(arrival(&h, 100)).await.unwrap();
        assert_eq!(spent(&l).await, 350);
        drop(c.usage_sink());
        assert_eq!(spent(&l).await, 150);
    }

    #[tokio::test(start_paused = true)]
    async fn over_budget_takes_nothing_from_the_buckets() {
        let (door, _l) = door();
        let h = http::HeaderMap::new();
        let e = door.admit(arrival(&h, 2_000)).await.err().unwrap();
        let AdmitError::OverBudget { decision, .. } = &e else {
            panic!("{e}")
        };
        assert!(decision.retry_after.is_some_and(|r| !r.is_zero()));
        let msg = e.to_string();
        assert!(
            msg.contains("budget exceeded for tenant `t`: usd_per_window is 0.001 USD, 0 spent"),
            "{msg}"
        );
        // The request slot is still there.
        assert!(door.admit(arrival(&h, 100)).await.is_ok());
    }
}
